//! The `erpsync` command: parses arguments and hands over to `cli`, which runs the commands on
//! the `erpsync` library and, for `demo` and `sim`, the `erpsync-sim` simulators.

mod cli;

/// mimalloc instead of the system's allocator (the default `mimalloc` feature). On glibc's
/// malloc the 100,000-product first sync of `cargo bench --bench catalog` took 3.2 – 3.4
/// CPU-s, on mimalloc 2.5 – 2.8 (docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: Mimalloc = Mimalloc;

/// mimalloc's own `malloc` for the alignments every block of it has (8 bytes: its blocks
/// are whole words), its aligned calls for the rest. `mimalloc::MiMalloc` asks for every
/// block by the aligned call, whose checks cost about 20 instructions an allocation (a first
/// sync makes 5.5 million; docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
struct Mimalloc;

#[cfg(feature = "mimalloc")]
const WORD: usize = 8;

/// `plain` of `size` for an alignment of a word at most (`Mimalloc`), else `aligned` of
/// `size` and `align`.
#[cfg(feature = "mimalloc")]
#[inline(always)]
fn by_alignment(
    size: usize,
    align: usize,
    plain: impl FnOnce(usize) -> *mut std::ffi::c_void,
    aligned: impl FnOnce(usize, usize) -> *mut std::ffi::c_void,
) -> *mut u8 {
    if align <= WORD {
        plain(size).cast()
    } else {
        aligned(size, align).cast()
    }
}

#[cfg(feature = "mimalloc")]
// SAFETY: each call hands the layout's size and alignment to mimalloc, whose blocks of the
// plain calls are aligned to a word at least (`WORD`): alignments above it go to the aligned
// calls, as `mimalloc::MiMalloc` makes every call; `dealloc` frees either kind.
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        // SAFETY: as above.
        by_alignment(
            layout.size(),
            layout.align(),
            |size| unsafe { mi_malloc(size) },
            |size, align| unsafe { mi_malloc_aligned(size, align) },
        )
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        // SAFETY: as above.
        by_alignment(
            layout.size(),
            layout.align(),
            |size| unsafe { mi_zalloc(size) },
            |size, align| unsafe { mi_zalloc_aligned(size, align) },
        )
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator.
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        // SAFETY: `ptr` came from this allocator with `layout`; as above.
        by_alignment(
            size,
            layout.align(),
            |size| unsafe { mi_realloc(ptr.cast(), size) },
            |size, align| unsafe { mi_realloc_aligned(ptr.cast(), size, align) },
        )
    }
}

fn main() -> std::process::ExitCode {
    cli::main()
}

/// mimalloc commits a whole arena up front on Linux (`arena_eager_commit` 2), which left every
/// run 10 – 25 MB larger than on glibc: the 100k dry run peaked at 61 MB, over its 60 MB
/// target. Committed as used, the same run peaks at about 47 MB for about the same CPU. The
/// option is set before the program's first allocation (mimalloc reserves its first arena
/// then, before `main`), by a constructor the loader runs; a value set in the environment
/// (`MIMALLOC_ARENA_EAGER_COMMIT`) is left to win.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[used]
#[unsafe(link_section = ".init_array")]
static COMMIT_ARENAS_AS_USED: extern "C" fn() = commit_arenas_as_used;

#[cfg(all(feature = "mimalloc", target_os = "linux"))]
extern "C" fn commit_arenas_as_used() {
    /// `mi_option_arena_eager_commit` in mimalloc's `mi_option_e`.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    unsafe extern "C" {
        fn getenv(name: *const std::ffi::c_char) -> *mut std::ffi::c_char;
    }
    // SAFETY: the loader runs this before `main`, on the only thread, and neither call
    // allocates: `getenv` reads the environment the loader set up, and mimalloc's options
    // are plain integers that its initialisation keeps once set.
    unsafe {
        if getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        }
    }
}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    use std::alloc::{GlobalAlloc, Layout};

    use super::Mimalloc;

    /// Every block has the alignment its layout asks for, from a byte to a page, whichever
    /// of mimalloc's calls made it; zeroed blocks are zero, and a block grown or shrunk keeps
    /// its bytes and its alignment.
    #[test]
    fn blocks_have_their_layouts_alignment_and_keep_their_bytes() {
        let a = Mimalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 8, 12, 24, 40, 100, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                for round in 0..20u8 {
                    // SAFETY: non-zero sizes; each block is used within its size and freed
                    // once, with the layout it has.
                    unsafe {
                        let p = a.alloc(layout);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
                        for i in 0..size {
                            *p.add(i) = (i as u8) ^ round;
                        }
                        let grown = a.realloc(p, layout, size * 3);
                        assert_eq!(grown as usize % align, 0, "grown to {}", size * 3);
                        for i in 0..size {
                            assert_eq!(*grown.add(i), (i as u8) ^ round);
                        }
                        let bigger = Layout::from_size_align(size * 3, align).unwrap();
                        let shrunk = a.realloc(grown, bigger, size.div_ceil(2));
                        assert_eq!(shrunk as usize % align, 0);
                        for i in 0..size.div_ceil(2) {
                            assert_eq!(*shrunk.add(i), (i as u8) ^ round);
                        }
                        let shrunk_layout =
                            Layout::from_size_align(size.div_ceil(2), align).unwrap();
                        a.dealloc(shrunk, shrunk_layout);

                        let z = a.alloc_zeroed(layout);
                        assert_eq!(z as usize % align, 0);
                        assert!((0..size).all(|i| *z.add(i) == 0));
                        a.dealloc(z, layout);
                    }
                }
            }
        }
    }
}
