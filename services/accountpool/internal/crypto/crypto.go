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
// the same organization, does not decrypt.
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

// Encrypt seals plaintext for one account of one organization under the
// current KEK and returns the ciphertext and the KEK version.
func (k *Keyring) Encrypt(plaintext secret.String, orgID, accountID string) ([]byte, int32, error) {
	out := make([]byte, headerSize+nonceSize, headerSize+nonceSize+len(plaintext.Reveal())+tagSize)
	out[0] = formatV1
	binary.BigEndian.PutUint32(out[1:headerSize], k.current)
	nonce := out[headerSize:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, 0, fmt.Errorf("generating nonce: %w", err)
	}
	out = k.aeads[k.current].Seal(out, nonce, []byte(plaintext.Reveal()), associatedData(out[:headerSize], orgID, accountID))
	return out, int32(k.current), nil
}

// Decrypt opens a ciphertext produced by Encrypt for the same organization
// and account. It returns ErrUnknownKeyVersion or ErrDecrypt, and never
// panics, whatever the input.
func (k *Keyring) Decrypt(ciphertext []byte, orgID, accountID string) (secret.String, error) {
	if len(ciphertext) < headerSize+nonceSize+tagSize || ciphertext[0] != formatV1 {
		return secret.String{}, ErrDecrypt
	}
	ver := binary.BigEndian.Uint32(ciphertext[1:headerSize])
	aead, ok := k.aeads[ver]
	if !ok {
		return secret.String{}, fmt.Errorf("version %d: %w", ver, ErrUnknownKeyVersion)
	}
	nonce := ciphertext[headerSize : headerSize+nonceSize]
	plain, err := aead.Open(nil, nonce, ciphertext[headerSize+nonceSize:], associatedData(ciphertext[:headerSize], orgID, accountID))
	if err != nil {
		return secret.String{}, ErrDecrypt
	}
	return secret.New(string(plain)), nil
}

// associatedData encodes (purpose, header, org, account) unambiguously:
// each variable part is length-prefixed, so ("ab","c") and ("a","bc")
// differ.
func associatedData(header []byte, orgID, accountID string) []byte {
	const purpose = "switchyard.accountpool.v1.api-key"
	ad := make([]byte, 0, len(purpose)+len(header)+8+len(orgID)+len(accountID))
	ad = append(ad, purpose...)
	ad = append(ad, header...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(orgID)))
	ad = append(ad, orgID...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(accountID)))
	ad = append(ad, accountID...)
	return ad
}
