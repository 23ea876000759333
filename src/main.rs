/// mimalloc: the server allocates and frees on many threads (the writer, the runtime's
/// workers); glibc's allocator spent a fifth of the gate's CPU time on that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    countersign::cli::main()
}
