//! Black-box tests of the whole system live in `tests/it`: they start the
//! built `sygno` binary on a free port with a temporary data directory and
//! talk HTTP to it. This library is empty on purpose.
