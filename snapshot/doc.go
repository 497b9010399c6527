// Package snapshot takes live snapshots of memory: a point-in-time copy of
// running memory while its writers keep running, without fork().
package snapshot
