package main

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"sort"
)

// Generated disk contents.
//
// A disk of C bytes is n = ceil(C / 1 MiB) chunks. k = round(dataFraction × n)
// of them hold pseudo-random data, the others are holes (never written, so
// they read as zeros and take no space). Which chunks: the first k entries
// of a Fisher–Yates shuffle of 0..n-1 driven by ChaCha8 keyed with
// (seed, "chunks"). The bytes of data chunk i: the ChaCha8 stream keyed with
// (seed, i). Go specifies ChaCha8 exactly, so the same (capacity, seed,
// dataFraction) gives the same bytes on every run and machine; tests normally
// just hash the flat file.
const contentChunk = 1 << 20

func chachaKey(seed uint64, tag uint64, index uint64) [32]byte {
	var k [32]byte
	binary.LittleEndian.PutUint64(k[0:], seed)
	binary.LittleEndian.PutUint64(k[8:], tag)
	binary.LittleEndian.PutUint64(k[16:], index)
	copy(k[24:], "vmm-disk")
	return k
}

const (
	tagChunks = 1
	tagData   = 2
)

// dataChunks returns the sorted indices of the chunks that hold data.
func dataChunks(n int64, seed uint64, fraction float64) []int64 {
	k := int64(math.Round(fraction * float64(n)))
	k = max(0, min(k, n))
	if k == 0 {
		return nil
	}
	perm := make([]int64, n)
	for i := range perm {
		perm[i] = int64(i)
	}
	rng := rand.New(rand.NewChaCha8(chachaKey(seed, tagChunks, 0)))
	for i := int64(0); i < k; i++ {
		j := i + rng.Int64N(n-i)
		perm[i], perm[j] = perm[j], perm[i]
	}
	sel := perm[:k]
	sort.Slice(sel, func(a, b int) bool { return sel[a] < sel[b] })
	return sel
}

// writeDiskContent makes path a sparse file of exactly capacity bytes with
// the generated content; it returns the number of data bytes written.
func writeDiskContent(path string, capacity int64, seed uint64, fraction float64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	// Truncate to 0 first so old data cannot survive in what should be holes.
	if err := f.Truncate(0); err != nil {
		return 0, err
	}
	if err := f.Truncate(capacity); err != nil {
		return 0, err
	}
	n := (capacity + contentChunk - 1) / contentChunk
	buf := make([]byte, contentChunk)
	var written int64
	for _, i := range dataChunks(n, seed, fraction) {
		size := min(int64(contentChunk), capacity-i*contentChunk)
		stream := rand.NewChaCha8(chachaKey(seed, tagData, uint64(i)))
		_, _ = stream.Read(buf[:size]) // never fails
		if _, err := f.WriteAt(buf[:size], i*contentChunk); err != nil {
			return written, err
		}
		written += size
	}
	return written, f.Close()
}
