package pool

import (
	"hash/maphash"
	"iter"
)

// tree is an immutable ordered set of accounts: a treap whose writes copy
// only the path they change (O(log n) nodes) and share the rest with the
// tree they came from. Views are published to lock-free readers and
// replaced on every admin write; with a tree, registering the n-th
// account costs O(log n) instead of copying and sorting all n (issue 15).
//
// A node's priority is a hash of its account id, so the shape depends
// only on the set, never on the order of the writes, and stays balanced
// in expectation whatever order ids arrive in. The zero tree is empty.
type tree struct {
	root *node
	less func(a, b *account) bool
}

type node struct {
	a           *account
	left, right *node
	prio        uint64
	size        int
}

// treeSeed keys every tree's priorities: fixed per process, so two trees
// of one view agree on what they would do, and random across processes.
var treeSeed = maphash.MakeSeed()

func prio(a *account) uint64 { return maphash.String(treeSeed, a.ID) }

func size(n *node) int {
	if n == nil {
		return 0
	}
	return n.size
}

func mk(a *account, p uint64, l, r *node) *node {
	return &node{a: a, prio: p, left: l, right: r, size: size(l) + size(r) + 1}
}

// Len is the number of accounts in t.
func (t tree) Len() int { return size(t.root) }

// with returns t holding a, replacing the account equal to it under the
// tree's order (callers remove an account whose key changed first).
func (t tree) with(a *account) tree {
	t.root = t.insert(t.root, a, prio(a))
	return t
}

func (t tree) insert(n *node, a *account, p uint64) *node {
	if n == nil {
		return mk(a, p, nil, nil)
	}
	switch {
	case t.less(a, n.a):
		l := t.insert(n.left, a, p)
		if l.prio > n.prio {
			// Rotate right: l becomes the root of this subtree.
			return mk(l.a, l.prio, l.left, mk(n.a, n.prio, l.right, n.right))
		}
		return mk(n.a, n.prio, l, n.right)
	case t.less(n.a, a):
		r := t.insert(n.right, a, p)
		if r.prio > n.prio {
			return mk(r.a, r.prio, mk(n.a, n.prio, n.left, r.left), r.right)
		}
		return mk(n.a, n.prio, n.left, r)
	default:
		return mk(a, n.prio, n.left, n.right)
	}
}

// without returns t without the account equal to a under the tree's order;
// t itself when it has none.
func (t tree) without(a *account) tree {
	t.root = t.remove(t.root, a)
	return t
}

func (t tree) remove(n *node, a *account) *node {
	if n == nil {
		return nil
	}
	switch {
	case t.less(a, n.a):
		l := t.remove(n.left, a)
		if l == n.left {
			return n
		}
		return mk(n.a, n.prio, l, n.right)
	case t.less(n.a, a):
		r := t.remove(n.right, a)
		if r == n.right {
			return n
		}
		return mk(n.a, n.prio, n.left, r)
	default:
		return merge(n.left, n.right)
	}
}

// merge joins two trees whose every key of l is before every key of r.
func merge(l, r *node) *node {
	switch {
	case l == nil:
		return r
	case r == nil:
		return l
	case l.prio > r.prio:
		return mk(l.a, l.prio, l.left, merge(l.right, r))
	default:
		return mk(r.a, r.prio, merge(l, r.left), r.right)
	}
}

// find returns the account equal to probe under the tree's order.
func (t tree) find(probe *account) (*account, bool) {
	for n := t.root; n != nil; {
		switch {
		case t.less(probe, n.a):
			n = n.left
		case t.less(n.a, probe):
			n = n.right
		default:
			return n.a, true
		}
	}
	return nil, false
}

// All yields every account in order.
func (t tree) All() iter.Seq[*account] {
	return func(yield func(*account) bool) { walk(t.root, yield) }
}

func walk(n *node, yield func(*account) bool) bool {
	for n != nil {
		if !walk(n.left, yield) || !yield(n.a) {
			return false
		}
		n = n.right
	}
	return true
}

// After yields, in order, the accounts strictly after probe (every
// account when probe is nil). Reaching the first costs O(log n).
func (t tree) After(probe *account) iter.Seq[*account] {
	if probe == nil {
		return t.All()
	}
	return func(yield func(*account) bool) { t.after(t.root, probe, yield) }
}

func (t tree) after(n *node, probe *account, yield func(*account) bool) bool {
	for n != nil {
		if !t.less(probe, n.a) {
			// n and its left subtree are at or before probe.
			n = n.right
			continue
		}
		if !t.after(n.left, probe, yield) || !yield(n.a) {
			return false
		}
		return walk(n.right, yield)
	}
	return true
}

// slice returns the accounts in order.
func (t tree) slice() []*account {
	out := make([]*account, 0, t.Len())
	for a := range t.All() {
		out = append(out, a)
	}
	return out
}

// buildTree returns the tree of accounts, which are in the order less
// defines, without duplicates: O(n), against O(n log n) for n inserts (a
// view is rebuilt this way on every reload from the store).
func buildTree(accounts []*account, less func(a, b *account) bool) tree {
	// The treap of sorted keys is their Cartesian tree on the priorities:
	// one pass with the right spine on a stack.
	var spine []*node
	for _, a := range accounts {
		n := &node{a: a, prio: prio(a)}
		var last *node
		for len(spine) > 0 && spine[len(spine)-1].prio < n.prio {
			last = spine[len(spine)-1]
			spine = spine[:len(spine)-1]
		}
		n.left = last
		if len(spine) > 0 {
			spine[len(spine)-1].right = n
		}
		spine = append(spine, n)
	}
	t := tree{less: less}
	if len(spine) > 0 {
		t.root = spine[0]
		fixSizes(t.root)
	}
	return t
}

func fixSizes(n *node) int {
	if n == nil {
		return 0
	}
	n.size = fixSizes(n.left) + fixSizes(n.right) + 1
	return n.size
}
