//! The launcher's global allocator: the system's (glibc's malloc), except that a block of
//! `LARGE` bytes or more always gets a mapping of its own.
//!
//! glibc maps a large block on its own only when no free chunk of its arenas can hold it. After
//! a burst, the arenas are full of free chunks that big, so a large block is cut out of one: it
//! goes back to the arena when freed (resident until a trim finds the pages free), and a zeroed
//! one is cleared with `memset`, which makes every page of it resident at once. The one that
//! matters is sled's page table, 6 MiB zeroed and then written a few entries at a time: mapped
//! on its own, its untouched pages cost nothing; cut from an arena when the store is opened again
//! after a burst (`Store::release_memory`), all 6 MiB are resident. A block of its own is
//! returned to the system as soon as it is freed. Large blocks are few (buffers, tables, the
//! vectors of a burst), so the system calls they cost are too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// From this size on, a block is a mapping of its own (glibc's default threshold for mapping a
/// block is 128 KiB, raised up to 32 MiB as blocks are freed; 1 MiB keeps the system calls to
/// the blocks that are worth one).
const LARGE: usize = 1 << 20;

/// The alignment a fresh mapping has (the smallest page size of the platforms the launcher
/// runs on); a block that asks for more goes to the system allocator.
const MAPPING_ALIGN: usize = 4096;

/// The system allocator with large blocks mapped on their own; see the module documentation.
pub struct Allocator;

fn is_large(layout: &Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= MAPPING_ALIGN
}

/// A fresh private mapping of `size` bytes (zeroed by the kernel, resident only once written),
/// or null. Out of line, as the rest of the large blocks' path.
#[cold]
#[inline(never)]
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // memory of the process; failure is reported as MAP_FAILED, turned into null below.
    let block = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if block == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        block.cast()
    }
}

// SAFETY: every block is either the system allocator's, under the same layout rules as
// `System`, or a mapping made by `map` for a layout that `is_large`: page-aligned (at least the
// alignment asked for) and at least `size` bytes long. Which of the two a block is follows from
// its layout alone, which the caller passes back unchanged to `dealloc` and `realloc`.
//
// The methods are kept out of line: inlined at every allocation of the program (as LTO does),
// they made the release binary's text 430 KB larger, and the text is most of the launcher's
// file-backed memory. Out of line, it is 130 KB, and each allocation one call deeper.
unsafe impl GlobalAlloc for Allocator {
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(&layout) {
            map(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees (a layout of non-zero size).
            unsafe { System.alloc(layout) }
        }
    }

    #[inline(never)]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(&layout) {
            // A fresh mapping is zeroed already; none of it is resident until written.
            map(layout.size())
        } else {
            // SAFETY: as in `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    #[inline(never)]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if is_large(&layout) {
            // SAFETY: `block` is a mapping of `layout.size()` bytes made by `map` (see above)
            // that the caller no longer uses.
            unsafe { unmap(block, layout.size()) }
        } else {
            // SAFETY: `block` came from `System` with this layout.
            unsafe { System.dealloc(block, layout) }
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size`, rounded up to the alignment, does not
        // overflow `isize`, so this layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if is_large(&layout) || is_large(&new_layout) {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { realloc_large(block, layout, new_layout) }
        } else {
            // SAFETY: `block` came from `System` with `layout`, and stays with it.
            unsafe { System.realloc(block, layout, new_size) }
        }
    }
}

/// Returns a mapping made by `map` to the system.
///
/// # Safety
/// `block` is a mapping of `size` bytes made by `map` that nobody uses any more.
#[cold]
#[inline(never)]
unsafe fn unmap(block: *mut u8, size: usize) {
    // SAFETY: as the caller guarantees. munmap fails only for a range that is not a mapping,
    // which this is not, and a deallocation has nothing to do about a failure.
    unsafe {
        libc::munmap(block.cast(), size);
    }
}

/// `realloc` of a block that is large before or after: a mapping resized (or moved) whole, or a
/// block of the other kind with the bytes that both hold copied.
///
/// # Safety
/// As `GlobalAlloc::realloc`, with `new_layout` the block's layout at its new size.
#[cold]
#[inline(never)]
unsafe fn realloc_large(block: *mut u8, layout: Layout, new_layout: Layout) -> *mut u8 {
    if is_large(&layout) && is_large(&new_layout) {
        // SAFETY: `block` is a mapping of `layout.size()` bytes made by `map`; mremap moves or
        // resizes it whole, or fails and leaves it as it was.
        let moved = unsafe {
            libc::mremap(
                block.cast(),
                layout.size(),
                new_layout.size(),
                libc::MREMAP_MAYMOVE,
            )
        };
        return if moved == libc::MAP_FAILED {
            ptr::null_mut()
        } else {
            moved.cast()
        };
    }
    // SAFETY: `new_layout` has a non-zero size (a realloc to zero is not allowed).
    let moved = unsafe { Allocator.alloc(new_layout) };
    if !moved.is_null() {
        // SAFETY: both blocks are valid for the smaller of the two sizes and are distinct
        // allocations; `block` is freed with the layout it came with.
        unsafe {
            ptr::copy_nonoverlapping(block, moved, layout.size().min(new_layout.size()));
            Allocator.dealloc(block, layout);
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates `layout` with `Allocator`, checks alignment and the zeroes of a zeroed block,
    /// writes every byte, grows and shrinks it across the threshold checking the bytes kept,
    /// and frees it.
    fn round_trip(size: usize, align: usize, grown: usize) {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY (test): layouts of non-zero size; every pointer used is checked non-null and
        // used within the size it was allocated with.
        unsafe {
            let block = Allocator.alloc_zeroed(layout);
            assert!(!block.is_null());
            assert_eq!(block as usize % align, 0);
            assert!(std::slice::from_raw_parts(block, size)
                .iter()
                .all(|byte| *byte == 0));
            for offset in 0..size {
                *block.add(offset) = (offset % 251) as u8;
            }
            let block = Allocator.realloc(block, layout, grown);
            assert!(!block.is_null());
            assert_eq!(block as usize % align, 0);
            let kept = size.min(grown);
            assert!(std::slice::from_raw_parts(block, kept)
                .iter()
                .enumerate()
                .all(|(offset, byte)| *byte == (offset % 251) as u8));
            let grown_layout = Layout::from_size_align(grown, align).unwrap();
            let block = Allocator.realloc(block, grown_layout, size);
            assert!(!block.is_null());
            let kept = size.min(grown);
            assert!(std::slice::from_raw_parts(block, kept)
                .iter()
                .enumerate()
                .all(|(offset, byte)| *byte == (offset % 251) as u8));
            Allocator.dealloc(block, layout);
        }
    }

    #[test]
    fn small_and_large_blocks_keep_their_bytes_across_the_threshold() {
        round_trip(64, 8, 4096);
        round_trip(64, 8, LARGE + 5);
        round_trip(LARGE - 1, 16, LARGE + 1);
        round_trip(LARGE, 8, 3 * LARGE);
        round_trip(3 * LARGE + 17, 64, LARGE / 2);
        round_trip(LARGE, MAPPING_ALIGN, 2 * LARGE);
        // More alignment than a mapping gives: the system allocator's block, at any size.
        round_trip(LARGE, 2 * MAPPING_ALIGN, 2 * LARGE);
    }

    /// The pages of the 6 MiB block that `a_large_zeroed_block_…` checks.
    const BLOCK_PAGES: usize = 6 * LARGE / MAPPING_ALIGN;

    /// How many of the `BLOCK_PAGES` pages from `start` are resident, or `None` if some of the
    /// range is not mapped at all. Allocates nothing (it runs in a forked child).
    fn resident_pages(start: *mut u8) -> Option<usize> {
        let mut residency = [0u8; BLOCK_PAGES];
        // SAFETY (test): `start` is page-aligned (checked by the caller) and `residency` holds
        // a byte for every page of the range.
        let status = unsafe {
            libc::mincore(
                start.cast(),
                BLOCK_PAGES * MAPPING_ALIGN,
                residency.as_mut_ptr(),
            )
        };
        (status == 0).then(|| residency.iter().filter(|page| *page & 1 == 1).count())
    }

    /// The checks of `a_large_zeroed_block_…`, as an exit code: 0 when all hold, else the
    /// number of the first that failed. Makes no allocation but the block's own mapping, so
    /// that it may run in a forked child.
    fn large_zeroed_block_checks() -> i32 {
        let layout = Layout::from_size_align(BLOCK_PAGES * MAPPING_ALIGN, 8).unwrap();
        // SAFETY (test): a layout of non-zero size; the block is used within it and freed with
        // it.
        unsafe {
            let block = Allocator.alloc_zeroed(layout);
            if block.is_null() || block as usize % MAPPING_ALIGN != 0 {
                return 1;
            }
            if resident_pages(block) != Some(0) {
                return 2;
            }
            *block.add(LARGE) = 1;
            if resident_pages(block) != Some(1) {
                return 3;
            }
            Allocator.dealloc(block, layout);
            if resident_pages(block).is_some() {
                return 4;
            }
        }
        0
    }

    /// Checked in a forked child, where no other thread runs: in the test process, another
    /// test's thread could map the freed range again between the free and the check. The
    /// child's answer comes through a pipe, not its exit status, which another test's sweep of
    /// the process's children (`reaper::reap_all`) may reap first.
    #[test]
    fn a_large_zeroed_block_is_resident_only_once_written_and_returned_when_freed() {
        use std::io::{Read, Write};
        // Close-on-exec, so no child another test spawns meanwhile holds the pipe open.
        let (mut answers, mut answer) = std::io::pipe().unwrap();
        // SAFETY (test): the child runs only `large_zeroed_block_checks` and a write (system
        // calls, no lock another thread could hold) and leaves with `_exit`, running no
        // destructor or exit handler of the parent's.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let failed = large_zeroed_block_checks();
                let code = if answer.write_all(&[failed as u8]).is_ok() {
                    0
                } else {
                    1
                };
                // SAFETY (test): ends the forked child at once, as above.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(answer);
                let mut failed = Vec::new();
                answers.read_to_end(&mut failed).unwrap();
                // Reaped here, unless a sweep of another test did it first.
                let _ = nix::sys::wait::waitpid(child, None);
                assert_eq!(
                    failed,
                    [0],
                    "no answer: the child died; 1: not a page-aligned block, 2: resident \
                     before written, 3: more than the written page resident, 4: still mapped \
                     once freed"
                );
            }
        }
    }
}
