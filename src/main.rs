/// mimalloc: the server allocates and frees on many threads (the writer, the runtime's
/// workers); glibc's allocator spent a fifth of the gate's CPU time on that. Freed memory
/// is kept for reuse rather than returned to the OS: see `countersign::memory`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    countersign::memory::keep_freed_memory();
    countersign::cli::main()
}
