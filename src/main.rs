//! The `erpsync` command: parses arguments and hands over to `cli`, which runs the commands on
//! the `erpsync` library and, for `demo` and `sim`, the `erpsync-sim` simulators.

mod cli;

/// mimalloc instead of the system's allocator (the default `mimalloc` feature). On glibc's
/// malloc the 100,000-product first sync of `cargo bench --bench catalog` took 3.2 – 3.4
/// CPU-s, on mimalloc 2.5 – 2.8 (docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
