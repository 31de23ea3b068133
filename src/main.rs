//! The `sitio` binary: sitio with no decorators of its own beyond the
//! built-ins its settings switch on. A custom binary is the same one call
//! with decorators (see `examples/`).

fn main() -> std::process::ExitCode {
    sitio::main(|_config| sitio::Decorators::none())
}
