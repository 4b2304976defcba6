# The two commands of the README:
#   make run   installs what is needed and starts the whole stack locally (Ctrl-C stops it)
#   make test  installs test dependencies and runs the whole test suite
VENV ?= .venv
DATA_DIR ?= .openkcm
PYTEST_ARGS ?=

.PHONY: run test
run:
	@scripts/bootstrap.sh run
	$(VENV)/bin/openkcm local up --data-dir $(DATA_DIR)

test:
	@scripts/bootstrap.sh test
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
