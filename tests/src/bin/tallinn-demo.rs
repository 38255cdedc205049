//! `tallinn-demo`: not yet built.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("tallinn-demo is not built yet");
    std::process::exit(1);
}
