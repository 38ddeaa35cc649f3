# acctd - the two commands people need are `sudo make demo` and `sudo make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DURATION ?= 20

.PHONY: setup demo test test-fast bench bench-peers clean

setup:
	@VENV=$(VENV) bash vagrant/provision.sh

include packaging/install.mk

demo: setup
	$(PY) -m acctd.demo --duration $(DURATION)

test: setup
	$(PY) -m pytest -q tests

# Without the root/kernel/netns/vm tiers.
test-fast: setup
	$(PY) -m pytest -q -m "not root and not vm and not peers" tests

bench: setup
	@mkdir -p .bench
	@# pipefail: a failing benchmark fails the target, tee or not
	bash -o pipefail -c '{ $(PY) -m acctd.bench.datapath && $(PY) -m acctd.bench.live && $(PY) -m acctd.bench.control && $(PY) -m acctd.bench.monitor && $(PY) -m acctd.bench.export && $(PY) -m acctd.bench.asn && $(PY) -m acctd.bench.collector && $(PY) -m acctd.bench.aclserver && $(PY) -m acctd.bench.billing && $(PY) -m acctd.bench.billing_invoices && $(PY) -m acctd.bench.auth && $(PY) -m acctd.bench.web && $(PY) -m acctd.bench.central; } | tee .bench/results.jsonl'

# Not part of `bench` or CI: acctd, pmacctd and softflowd on the same blast (root, ~20 s).
bench-peers: setup
	$(PY) -m acctd.bench.peers

clean:
	rm -rf $(VENV) .bench .pytest_cache build *.egg-info
