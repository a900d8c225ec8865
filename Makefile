# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs:
# uv (from PyPI, into .tools/ if it is not on PATH), then the locked environment in .venv/.
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PYTEST_ARGS ?=

.PHONY: demo test lint bench chaos clean install uninstall

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv

.venv/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --all-extras
	touch $@

# `make install`: the `spoolq` command in $(BINDIR), run from its own virtualenv in $(LIBDIR)
# holding the locked versions (uv.lock), plus the docs and systemd units in $(DOCDIR).
# Default: for you alone, in ~/.local. For every user of the host: sudo make install PREFIX=/usr/local
PREFIX ?= $(HOME)/.local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib/spoolq
DOCDIR ?= $(PREFIX)/share/doc/spoolq
EXTRAS ?= postgres

install: $(UV)
	$(UV) venv --quiet --allow-existing $(LIBDIR)
	$(UV) export --quiet --frozen --no-dev --no-hashes --no-emit-project \
		$(foreach e,$(EXTRAS),--extra $(e)) -o $(LIBDIR)/requirements.txt
	$(UV) pip install --quiet --python $(LIBDIR)/bin/python --reinstall-package spoolq \
		-r $(LIBDIR)/requirements.txt .
	install -d $(BINDIR) $(DOCDIR)
	ln -sf $(LIBDIR)/bin/spoolq $(BINDIR)/spoolq
	install -m 644 README.md CHANGELOG.md docs/*.md contrib/*.service contrib/*.timer $(DOCDIR)/
	@echo "installed $(BINDIR)/spoolq ($$($(BINDIR)/spoolq --version))"
	@case ":$$PATH:" in *":$(BINDIR):"*) ;; \
		*) echo "note: $(BINDIR) is not on your PATH; add it, e.g. in ~/.profile:" \
			"export PATH=\"$(BINDIR):\$$PATH\"" ;; esac

uninstall:
	rm -rf $(LIBDIR) $(DOCDIR) $(BINDIR)/spoolq

demo: .venv/.synced
	$(UV) run --locked spoolq demo

test: .venv/.synced
	$(UV) run --locked ruff check spoolq tests bench
	$(UV) run --locked ruff format --check spoolq tests bench
	$(UV) run --locked mypy
	$(UV) run --locked pytest $(PYTEST_ARGS)

# BENCH_ARGS: e.g. --quick, --only latency, --runs 5 (see docs/performance.md).
# inotifywait (Debian's inotify-tools) is the latency floor; without it that ratio is n/a.
# SQLite's header (libsqlite3-dev) builds the durable chain in C; without it that line is n/a.
BENCH_ARGS ?=
bench: .venv/.synced
	@command -v inotifywait >/dev/null 2>&1 || apt-get install -y inotify-tools \
		|| echo "warning: inotify-tools not installed; the latency floor will be missing" >&2
	@test -e /usr/include/sqlite3.h || apt-get install -y libsqlite3-dev \
		|| echo "warning: libsqlite3-dev not installed; no durable chain in C" >&2
	$(UV) run --locked python -m bench $(BENCH_ARGS)

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache
