# Entry points for people and CI. `make test` is the whole suite; `.ci/run` runs `make lint` and `make test`.

# The suite needs a real Postgres (a role that may create databases: each test gets its own) and Redis.
# Override either on the command line or in the environment, e.g. `make test TEST_REDIS_URL=redis://host:6380`.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
TEST_REDIS_URL ?= redis://127.0.0.1:6379
export TEST_DATABASE_URL TEST_REDIS_URL

.PHONY: build run demo test lint fmt migrate chaos faults bench bench-sent-list load-baseline load-spike openapi coverage

## build: the optimised binary, target/release/insider-messaging
build:
	cargo build --release

## run: the service, configured by the environment and .env (see .env.example)
run:
	cargo run --release -- serve

## demo: the service on the embedded database with a stand-in provider and sample messages
demo:
	cargo run -- demo

## test: every test target (unit and integration) against TEST_DATABASE_URL and TEST_REDIS_URL
test:
	cargo test --all-targets

## lint: formatting check, then clippy with every warning an error
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

## fmt: format the code in place
fmt:
	cargo fmt --all

## migrate: apply the migrations to DATABASE_URL and exit (`serve` also applies them at start-up)
migrate:
	cargo run -- migrate

## chaos: three replicas, a failing provider that reports delivery, a failing status webhook receiver and
##        random SIGKILLs over 20,000 messages: each sent once, its delivery state as the provider reported,
##        one message.sent and one final delivery event per message (a few minutes)
chaos:
	cargo build
	python3 tests/chaos/chaos.py --binary target/debug/insider-messaging

## faults: Postgres restarted, backends killed, connections filled, an idle transaction, repeatable-read
##         readers, Redis stopped and serve SIGKILLed, each against a steady 800 msgs/s, on a Postgres and
##         Redis of its own (needs root); about 25 minutes. Figures: docs/reliability.md
faults: build
	python3 tests/faults/faults.py --binary target/release/insider-messaging

## bench: every scenario of load/README.md 3 times, a table of each with its median, and the flow-control
##        targets with PASS/FAIL: drain (messages/s, latency, CPU and RSS of serve, the pgbench ceiling),
##        latency-bound and instant-64 beside the same job in apalis (built on first use, ~3 min),
##        rate-limit (3 replicas), quota-429 (2 replicas) and backlog-pause (1,000,000 messages, the
##        database paused 30 s); 25 to 30 minutes on 2 cores. One of them, once:
##        `python3 load/bench.py --scenarios rate-limit --runs 1`. Numbers: docs/performance.md
bench: build
	python3 load/bench.py --binary target/release/insider-messaging

## bench-sent-list: GET /messages/sent (any page) and the claim's plan over 1,000,000 sent rows
bench-sent-list: build
	python3 load/sent_list.py --binary target/release/insider-messaging

## load-baseline, load-spike: the API under steady load, and under a 10x spike for 30 s (oha, installed
##        from crates.io when missing)
load-baseline: build
	python3 load/scenarios.py baseline --binary target/release/insider-messaging

load-spike: build
	python3 load/scenarios.py spike --binary target/release/insider-messaging

## openapi: write docs/openapi.json from the code (CI fails when the committed file is stale)
openapi:
	cargo build
	bash .ci/check-openapi --write

## coverage: line coverage with cargo-tarpaulin; fails under 70%
coverage:
	bash .ci/coverage
