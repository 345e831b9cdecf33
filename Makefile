# The two commands: `make dev` and `make test`. Everything else is a step of theirs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO_FLAGS ?= --locked

.PHONY: help dev test test-rust contract lint fmt infra-lint package bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

dev: ## run the whole platform on http://127.0.0.1:8000 (emulator, resources, workers)
	@local/stack.sh dev

test: lint infra-lint test-rust contract ## the full suite: format, clippy, template lint, unit + emulator tests, schemathesis

test-rust: ## unit, integration and end-to-end tests against a fresh emulator
	@local/stack.sh with-emulator cargo test $(CARGO_FLAGS) --workspace

contract: ## schemathesis (all checks, fixed seed) against the local server's own openapi.json
	@CARGO_FLAGS="$(CARGO_FLAGS)" local/stack.sh contract

lint: ## rustfmt and clippy, warnings are errors; one TLS stack (no ring in any crate)
	cargo fmt --all --check
	cargo clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings
	@# The Lambda binary carries aws-lc-rs only; features unify across the workspace, so ring in
	@# any crate (reqwest's rustls-tls-* features bring it) would reach it. See Cargo.toml.
	@if cargo tree $(CARGO_FLAGS) -e all -i ring --workspace --target all 2>/dev/null | grep -q '^ring v'; then \
		echo "ring is in the dependency graph again: cargo tree -e all -i ring --workspace --target all"; exit 1; fi

fmt: ## format the code
	cargo fmt --all

infra-lint: ## cfn-lint and sam validate --lint on infra/template.yaml (offline)
	@local/stack.sh venv
	@local/stack.sh sam-venv
	.venv/bin/cfn-lint infra/template.yaml
	AWS_ACCESS_KEY_ID=none AWS_SECRET_ACCESS_KEY=none SAM_CLI_TELEMETRY=0 \
		.venv-sam/bin/sam validate --lint --region us-east-1 --template-file infra/template.yaml

package: ## build the arm64 Lambda zip with cargo-lambda (target/lambda/bootstrap/bootstrap.zip)
	@local/stack.sh package-venv
	PATH="$(CURDIR)/.venv/bin:$$PATH" cargo lambda build --release --arm64 --output-format zip --bin bootstrap

bench: ## performance figures (see bench/)
	cargo build $(CARGO_FLAGS) --release -p bootstrap -p dotmac-bench
	@local/stack.sh with-emulator cargo run $(CARGO_FLAGS) --release -p dotmac-bench

clean: ## remove build output and local state
	cargo clean
	rm -rf .local
