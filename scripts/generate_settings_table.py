"""Write README.md's settings table from the settings tree (vcf_agent.app._settings_tree).

The table sits between the settings-table markers; tests/test_config.py checks it is fresh.

    .venv/bin/python scripts/generate_settings_table.py
"""

from __future__ import annotations

from pathlib import Path

from vcf_agent.app._settings_tree import settings_table

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- settings-table:begin -->\n", "<!-- settings-table:end -->"


def main() -> int:
    text = README.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README}: add the lines {BEGIN.strip()} and {END} where the table goes")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(head + BEGIN + settings_table() + END + tail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
