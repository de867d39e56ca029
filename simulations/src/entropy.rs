//! Seeded process randomness for the simulator.
//!
//! chitchat, tokio, ractor and std's `HashMap` keys draw randomness from the
//! OS. To make a run replayable from its seed, this binary exports its own
//! `getrandom` symbol: until [`seed`] is called it forwards to the kernel,
//! afterwards it fills buffers from a splitmix64 stream. std's `RandomState`
//! and the `getrandom` crate both call it (see FIELD-NOTES). Only the
//! simulator does this; the `gpumesh` binary never has deterministic
//! randomness.

#![allow(unsafe_code, reason = "exporting getrandom is the only way to seed randomness drawn inside dependencies")]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static SEEDED: AtomicBool = AtomicBool::new(false);
static STATE: AtomicU64 = AtomicU64::new(0);

/// Switches process randomness to a stream seeded by `seed`. Call before
/// anything that draws randomness runs (the start of `main`).
pub(crate) fn seed(seed: u64) {
    STATE.store(seed ^ 0x9E37_79B9_7F4A_7C15, Ordering::SeqCst);
    SEEDED.store(true, Ordering::SeqCst);
}

fn next() -> u64 {
    // splitmix64; the simulator is single-threaded, the atomic only makes
    // the static safe to share.
    let state = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst).wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// # Safety
/// Same contract as getrandom(2): `buf` is valid for `len` bytes.
#[allow(unreachable_pub, reason = "the symbol must be public for the dynamic linker to bind it")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getrandom(buf: *mut libc::c_void, len: usize, flags: libc::c_uint) -> isize {
    if !SEEDED.load(Ordering::SeqCst) {
        // SAFETY: forwards the caller's arguments unchanged to the kernel.
        return unsafe { libc::syscall(libc::SYS_getrandom, buf, len, flags) } as isize;
    }
    // SAFETY: the caller guarantees `buf` is valid for `len` bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    for chunk in bytes.chunks_mut(8) {
        let word = next().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    isize::try_from(len).unwrap_or(isize::MAX)
}
