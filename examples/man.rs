//! Prints the man page made from the option definitions:
//! `cargo run --example man > fifo2kinesis.1`.

fn main() {
    print!("{}", fifo2kinesis::options::man_page());
}
