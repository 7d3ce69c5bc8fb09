# The two commands of the README, and the checks CI runs.
#
#   make serve   run the server with the demo realm of the seed example
#   make test    formatting, lints and every test (what .ci/run runs)
#   make bench   the benchmarks; writes docs/BENCHMARKS.md

CARGO ?= cargo

.PHONY: serve test bench fmt lint unit polyglot browser mcp-conformance wasm-target postgres

serve:
	$(CARGO) run --release -- serve --demo

# `--workspace` keeps the feature set of `unit`: testing the root package
# alone resolves its dependencies' features differently and would build
# wasmtime a second time.
test: wasm-target postgres fmt lint unit polyglot browser mcp-conformance
	$(CARGO) test --release --workspace --test e2e -- --ignored polyglot browser:: mcp_conformance upstream_login oauth4webapi console::in_chromium

# A fresh machine lacks the wasm32-wasip2 standard library, and rustup
# does not install targets by itself here. (The build scripts that embed
# plugins add it too, through crates/guest-build, so `cargo run` alone
# also works.)
wasm-target:
	rustup target add wasm32-wasip2

fmt:
	$(CARGO) fmt --all -- --check
	cd plugins && $(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	cd plugins && $(CARGO) clippy --release --locked --target wasm32-wasip2 --all-targets -- -D warnings

unit:
	$(CARGO) test --release --workspace

# PostgreSQL's server binaries, for the tests that run replicas on a
# throwaway cluster (installed from Debian when missing).
postgres:
	scripts/install-postgres

# The seed's policies in Python and JavaScript (componentize-py from PyPI,
# componentize-js from npm), for the polyglot end-to-end tests.
polyglot:
	scripts/build-polyglot

# Debian's Chromium (installed when missing) and playwright-core from
# npm, for the end-to-end tests that sign in through the pages.
browser:
	scripts/install-browser

# The MCP project's conformance suite at its pinned version (npm ci, and a
# Node 22 from npm where the system's is older), for the end-to-end test
# that runs its authorization server scenarios against a realm.
mcp-conformance:
	scripts/mcp-conformance

# A release build, then the harness: the server on loopback with fresh
# data directories, each hot path against its limit measured in the same
# run. BENCH_ARGS=--quick for a short smoke run.
bench: wasm-target postgres polyglot
	$(CARGO) build --release -p agentauth -p agentauth-bench
	target/release/agentauth-bench $(BENCH_ARGS)
