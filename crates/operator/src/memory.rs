//! Giving freed heap back to the system.
//!
//! A cache fills from paged lists: each page is read whole, cut down to the few fields kept, and
//! freed, while the kept pieces stay scattered over the heap. glibc keeps those freed pages (it
//! returns memory only from the top of the heap), so an operator started over 10 000 sessions
//! held the high-water mark of its initial lists for good. `malloc_trim` hands every free page
//! back; it runs once, when the caches first synced.

#![allow(unsafe_code)] // malloc_trim(3) is a libc call; the one call below takes no pointer.

/// Returns the heap's free pages to the system (glibc only; elsewhere nothing to do).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heap under its lock; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}
