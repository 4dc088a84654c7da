"""Plain-text tables for terminal output."""

from typing import Sequence


def format_rows(rows: Sequence[Sequence[str]]) -> str:
  """Left-aligned columns separated by two spaces; the first row a header."""
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  return '\n'.join('  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                   for row in rows)
