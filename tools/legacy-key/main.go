// Command legacy-key reproduces what a jumpstarter 0.9.0 Go controller does with its
// CONTROLLER_KEY, using the same Go libraries (math/rand, filippo.io/keygen,
// golang-jwt/jwt/v5 at the versions the 0.9.0 controller pins). The Rust tests compare
// the Rust derivation against it and mint tokens as an upstream controller left them.
//
// Subcommands:
//
//	pubkey CONTROLLER_KEY
//	    the SPKI PEM of the P-256 key derived from CONTROLLER_KEY
//	mint --key CONTROLLER_KEY --sub SUBJECT [--lifetime 8760h] [--iat UNIX]
//	    an internal token signed exactly as the 0.9.0 controller signs it
//	rand-bytes SEED N
//	    N bytes (hex) of rand.New(rand.NewSource(SEED)).Read, SEED a signed 64-bit integer
//	cooked-table
//	    the Rust source of the 607 values math/rand mixes into its seeded state
//	    (token/src/legacy/cooked.rs), read from the running math/rand
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"reflect"
	"strconv"
	"time"
	"unsafe"

	"filippo.io/keygen"
	"github.com/golang-jwt/jwt/v5"
)

// The 0.9.0 internal issuer and audience.
const (
	issuer   = "https://localhost:8085"
	audience = "jumpstarter"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "pubkey":
		err = pubkey(os.Args[2:])
	case "mint":
		err = mint(os.Args[2:])
	case "rand-bytes":
		err = randBytes(os.Args[2:])
	case "cooked-table":
		err = cookedTable()
	case "-h", "--help", "help":
		usage()
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "legacy-key:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  legacy-key pubkey CONTROLLER_KEY
  legacy-key mint --key CONTROLLER_KEY --sub SUBJECT [--lifetime 8760h] [--iat UNIX]
  legacy-key rand-bytes SEED N
  legacy-key cooked-table`)
	os.Exit(2)
}

// derive is the 0.9.0 controller's key derivation (NewSignerFromSeed).
func derive(controllerKey []byte) (*ecdsa.PrivateKey, error) {
	hash := sha256.Sum256(controllerKey)
	seed := int64(binary.BigEndian.Uint64(hash[:8]))
	return keygen.ECDSALegacy(elliptic.P256(), rand.New(rand.NewSource(seed)))
}

func pubkey(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("pubkey takes exactly one argument, the controller key")
	}
	key, err := derive([]byte(args[0]))
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	return pem.Encode(os.Stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func mint(args []string) error {
	fs := flag.NewFlagSet("mint", flag.ContinueOnError)
	controllerKey := fs.String("key", "", "the controller key (CONTROLLER_KEY)")
	subject := fs.String("sub", "", "the token subject, e.g. client:<ns>:<name>:<uid>")
	lifetime := fs.Duration("lifetime", 365*24*time.Hour, "validity after iat")
	iat := fs.Int64("iat", 0, "issued-at as Unix seconds (default: now)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("mint takes no positional arguments")
	}
	if *subject == "" {
		return fmt.Errorf("mint needs --sub")
	}
	issued := time.Now()
	if *iat != 0 {
		issued = time.Unix(*iat, 0)
	}
	key, err := derive([]byte(*controllerKey))
	if err != nil {
		return err
	}
	token, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.RegisteredClaims{
		Issuer:    issuer,
		Subject:   *subject,
		Audience:  []string{audience},
		IssuedAt:  jwt.NewNumericDate(issued),
		ExpiresAt: jwt.NewNumericDate(issued.Add(*lifetime)),
	}).SignedString(key)
	if err != nil {
		return err
	}
	fmt.Println(token)
	return nil
}

func randBytes(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("rand-bytes takes SEED and N")
	}
	seed, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil {
		return fmt.Errorf("SEED: %w", err)
	}
	n, err := strconv.Atoi(args[1])
	if err != nil || n < 0 {
		return fmt.Errorf("N: not a count: %q", args[1])
	}
	buf := make([]byte, n)
	if _, err := rand.New(rand.NewSource(seed)).Read(buf); err != nil {
		return err
	}
	fmt.Println(hex.EncodeToString(buf))
	return nil
}

// The source's state after seeding is vec[i] = seeded(i) XOR cooked[i], where seeded(i)
// comes from the Park-Miller generator below. Reading vec and XOR-ing our own seeded
// values back out gives the cooked values.

// rngLen is the length of math/rand's feedback register.
const rngLen = 607

// parkMiller is x[n+1] = 48271 * x[n] mod (2^31 - 1), in Schrage's form so that it stays
// within 32 bits, as math/rand seeds its register.
func parkMiller(x int32) int32 {
	const (
		a = 48271
		q = 2147483647 / a
		r = 2147483647 % a
	)
	x = a*(x%q) - r*(x/q)
	if x < 0 {
		x += 2147483647
	}
	return x
}

// seeded returns the register values math/rand derives from seed before mixing in the
// cooked values.
func seeded(seed int64) [rngLen]int64 {
	seed %= 2147483647
	if seed < 0 {
		seed += 2147483647
	}
	if seed == 0 {
		seed = 89482311
	}
	x := int32(seed)
	var out [rngLen]int64
	for i := -20; i < rngLen; i++ {
		x = parkMiller(x)
		if i < 0 {
			continue
		}
		u := int64(x) << 40
		x = parkMiller(x)
		u ^= int64(x) << 20
		x = parkMiller(x)
		u ^= int64(x)
		out[i] = u
	}
	return out
}

// register reads the unexported feedback register of a fresh math/rand source.
func register(seed int64) ([rngLen]int64, error) {
	src := reflect.ValueOf(rand.NewSource(seed))
	if src.Kind() != reflect.Pointer {
		return [rngLen]int64{}, fmt.Errorf("math/rand source is a %s, not a pointer", src.Kind())
	}
	vec := src.Elem().FieldByName("vec")
	if !vec.IsValid() || vec.Type() != reflect.TypeOf([rngLen]int64{}) {
		return [rngLen]int64{}, fmt.Errorf("math/rand source has no [%d]int64 field vec", rngLen)
	}
	return *(*[rngLen]int64)(unsafe.Pointer(vec.UnsafeAddr())), nil
}

func cookedTable() error {
	var cooked [rngLen]int64
	// Two seeds must give the same table, which checks the seeding model above.
	for n, seed := range []int64{1, -7383454983324556329} {
		vec, err := register(seed)
		if err != nil {
			return err
		}
		ours := seeded(seed)
		for i := range cooked {
			c := vec[i] ^ ours[i]
			if n > 0 && c != cooked[i] {
				return fmt.Errorf("cooked value %d differs between seeds: the seeding model is wrong", i)
			}
			cooked[i] = c
		}
	}
	fmt.Println("//! The 607 constants Go's math/rand XORs into its seeded register (generated).")
	fmt.Println("//!")
	fmt.Println("//! Generated by `go run . cooked-table` in tools/legacy-key, which reads the register of")
	fmt.Println("//! the real math/rand after seeding and removes the seeded part; regenerate with:")
	fmt.Println("//! `cd tools/legacy-key && go run . cooked-table > ../../token/src/legacy/cooked.rs`.")
	fmt.Println()
	fmt.Println("/// The cooked values, in register order.")
	fmt.Println("#[rustfmt::skip]")
	fmt.Printf("pub(super) const COOKED: [i64; %d] = [\n", rngLen)
	for i := 0; i < rngLen; i += 3 {
		fmt.Print("   ")
		for j := i; j < i+3 && j < rngLen; j++ {
			fmt.Printf(" %d,", cooked[j])
		}
		fmt.Println()
	}
	fmt.Println("];")
	return nil
}
