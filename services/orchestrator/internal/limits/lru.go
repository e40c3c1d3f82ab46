package limits

// lruList is an intrusive doubly linked list of entries, most recently used
// first: O(1) to move, remove and find the least recently used, with no
// allocation beyond the entries themselves.
type lruList struct {
	head, tail *entry
}

func (l *lruList) back() *entry { return l.tail }

func (l *lruList) pushFront(e *entry) {
	e.prev, e.next = nil, l.head
	if l.head != nil {
		l.head.prev = e
	}
	l.head = e
	if l.tail == nil {
		l.tail = e
	}
}

func (l *lruList) remove(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		l.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		l.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (l *lruList) moveToFront(e *entry) {
	if l.head == e {
		return
	}
	l.remove(e)
	l.pushFront(e)
}
