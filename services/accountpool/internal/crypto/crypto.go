// Package crypto encrypts API keys at rest with AES-256-GCM under a
// versioned keyring of key-encryption keys (KEKs).
//
// Ciphertext format (all integers big-endian):
//
//	byte 0       format, always 1
//	bytes 1-4    KEK version (uint32, ≥ 1)
//	bytes 5-16   random 96-bit nonce
//	bytes 17-    AES-GCM ciphertext and 16-byte tag
//
// The version travels inside the ciphertext so that rotating the KEK needs
// no coordination: the newest version encrypts, every version in the
// keyring decrypts, and old ciphertexts are re-encrypted at leisure. The
// associated data binds a ciphertext to its organization and account id
// (and to its own header), so a ciphertext copied onto another row, even of
// the same organization, does not decrypt. An organization's default key
// (EncryptDefaultKey) has associated data of its own purpose, bound to the
// organization alone: a default key's ciphertext copied onto an account, or
// an account's onto the default key, does not decrypt either.
package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/switchyard-dev/switchyard/pkg/secret"
)

const (
	formatV1   = 1
	headerSize = 1 + 4
	nonceSize  = 12
	tagSize    = 16
	// KeySize is the size of a key-encryption key: AES-256.
	KeySize = 32
)

var (
	// ErrDecrypt is returned by Decrypt for any ciphertext that is
	// malformed, was tampered with, or belongs to another organization or
	// account. It deliberately says no more.
	ErrDecrypt = errors.New("api key ciphertext cannot be decrypted")
	// ErrUnknownKeyVersion is returned by Decrypt when the ciphertext names
	// a KEK version the keyring does not hold: the keyring is missing a
	// retired key that some account still uses.
	ErrUnknownKeyVersion = errors.New("api key ciphertext uses a key-encryption key version not in the keyring")
)

// Keyring holds every KEK version; the highest encrypts. It is safe for
// concurrent use.
type Keyring struct {
	current uint32
	aeads   map[uint32]cipher.AEAD
}

// ParseKeyring parses "1:<base64 32 bytes>[,2:<base64>...]" (standard
// base64, padding optional). Errors name the entry, never its key material.
func ParseKeyring(spec string) (*Keyring, error) {
	k := &Keyring{aeads: map[uint32]cipher.AEAD{}}
	if strings.TrimSpace(spec) == "" {
		return nil, errors.New("keyring is empty; want \"1:<base64 of 32 random bytes>\"")
	}
	for i, entry := range strings.Split(spec, ",") {
		verStr, b64, ok := strings.Cut(strings.TrimSpace(entry), ":")
		if !ok {
			return nil, fmt.Errorf("keyring entry %d: want \"<version>:<base64 key>\"", i+1)
		}
		ver, err := strconv.ParseUint(strings.TrimSpace(verStr), 10, 31)
		if err != nil || ver == 0 {
			return nil, fmt.Errorf("keyring entry %d: version must be an integer between 1 and %d", i+1, 1<<31-1)
		}
		v := uint32(ver)
		if _, dup := k.aeads[v]; dup {
			return nil, fmt.Errorf("keyring entry %d: version %d appears twice", i+1, v)
		}
		key, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(b64), "="))
		if err != nil {
			return nil, fmt.Errorf("keyring entry %d (version %d): key is not valid base64", i+1, v)
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("keyring entry %d (version %d): key must be %d bytes, got %d", i+1, v, KeySize, len(key))
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("keyring entry %d (version %d): %w", i+1, v, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("keyring entry %d (version %d): %w", i+1, v, err)
		}
		k.aeads[v] = aead
		k.current = max(k.current, v)
	}
	return k, nil
}

// GenerateKeyring returns a fresh keyring spec with one random version-1
// key, for development stacks that keep nothing across restarts anyway.
func GenerateKeyring() (string, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generating key-encryption key: %w", err)
	}
	return "1:" + base64.StdEncoding.EncodeToString(key), nil
}

// CurrentVersion is the KEK version Encrypt uses. An account whose key
// version differs is due for re-encryption.
func (k *Keyring) CurrentVersion() int32 { return int32(k.current) }

// Versions returns every KEK version the keyring holds, ascending: the
// versions whose ciphertexts it can decrypt.
func (k *Keyring) Versions() []int32 {
	out := make([]int32, 0, len(k.aeads))
	for v := range k.aeads {
		out = append(out, int32(v))
	}
	slices.Sort(out)
	return out
}

// Purposes of the associated data: what a ciphertext is for. They differ,
// so a ciphertext made for one purpose never decrypts as another.
const (
	purposeAccountKey = "switchyard.accountpool.v1.api-key"
	purposeDefaultKey = "switchyard.accountpool.v1.default-key"
)

// Encrypt seals plaintext for one account of one organization under the
// current KEK and returns the ciphertext and the KEK version.
func (k *Keyring) Encrypt(plaintext secret.String, orgID, accountID string) ([]byte, int32, error) {
	return k.seal(plaintext, func(header []byte) []byte { return associatedData(purposeAccountKey, header, orgID, accountID) })
}

// Decrypt opens a ciphertext produced by Encrypt for the same organization
// and account. It returns ErrUnknownKeyVersion or ErrDecrypt, and never
// panics, whatever the input.
func (k *Keyring) Decrypt(ciphertext []byte, orgID, accountID string) (secret.String, error) {
	return k.open(ciphertext, func(header []byte) []byte { return associatedData(purposeAccountKey, header, orgID, accountID) })
}

// EncryptDefaultKey seals an organization's default key under the current
// KEK, in the same format as Encrypt, with associated data that binds it to
// the organization and to the default-key purpose.
func (k *Keyring) EncryptDefaultKey(plaintext secret.String, orgID string) ([]byte, int32, error) {
	return k.seal(plaintext, func(header []byte) []byte { return associatedData(purposeDefaultKey, header, orgID) })
}

// DecryptDefaultKey opens a ciphertext produced by EncryptDefaultKey for
// the same organization; an account key's ciphertext, of any organization,
// is ErrDecrypt. Errors and guarantees as Decrypt.
func (k *Keyring) DecryptDefaultKey(ciphertext []byte, orgID string) (secret.String, error) {
	return k.open(ciphertext, func(header []byte) []byte { return associatedData(purposeDefaultKey, header, orgID) })
}

// seal encrypts under the current KEK; ad makes the associated data from
// the header.
func (k *Keyring) seal(plaintext secret.String, ad func(header []byte) []byte) ([]byte, int32, error) {
	out := make([]byte, headerSize+nonceSize, headerSize+nonceSize+len(plaintext.Reveal())+tagSize)
	out[0] = formatV1
	binary.BigEndian.PutUint32(out[1:headerSize], k.current)
	nonce := out[headerSize:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, 0, fmt.Errorf("generating nonce: %w", err)
	}
	out = k.aeads[k.current].Seal(out, nonce, []byte(plaintext.Reveal()), ad(out[:headerSize]))
	return out, int32(k.current), nil
}

// open decrypts a ciphertext of the package's format; ad makes the
// associated data from its header.
func (k *Keyring) open(ciphertext []byte, ad func(header []byte) []byte) (secret.String, error) {
	if len(ciphertext) < headerSize+nonceSize+tagSize || ciphertext[0] != formatV1 {
		return secret.String{}, ErrDecrypt
	}
	ver := binary.BigEndian.Uint32(ciphertext[1:headerSize])
	aead, ok := k.aeads[ver]
	if !ok {
		return secret.String{}, fmt.Errorf("version %d: %w", ver, ErrUnknownKeyVersion)
	}
	nonce := ciphertext[headerSize : headerSize+nonceSize]
	plain, err := aead.Open(nil, nonce, ciphertext[headerSize+nonceSize:], ad(ciphertext[:headerSize]))
	if err != nil {
		return secret.String{}, ErrDecrypt
	}
	return secret.New(string(plain)), nil
}

// associatedData encodes (purpose, header, parts...) unambiguously: each
// part is length-prefixed, so ("ab","c") and ("a","bc") differ. For an
// account key the parts are (org, account), which keeps the encoding of
// every ciphertext written before default keys existed; for a default key
// (org) alone, under another purpose.
func associatedData(purpose string, header []byte, parts ...string) []byte {
	n := len(purpose) + len(header)
	for _, p := range parts {
		n += 4 + len(p)
	}
	ad := make([]byte, 0, n)
	ad = append(ad, purpose...)
	ad = append(ad, header...)
	for _, p := range parts {
		ad = binary.BigEndian.AppendUint32(ad, uint32(len(p)))
		ad = append(ad, p...)
	}
	return ad
}
