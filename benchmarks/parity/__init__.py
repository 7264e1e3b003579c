"""Parity harnesses: kerastl against each method's reference implementation (see
docs/parity.md). `common` holds what every harness shares; one module per method family."""
