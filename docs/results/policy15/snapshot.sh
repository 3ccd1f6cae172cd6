#!/bin/bash
# Keep the code corpus' files (samples, splits, labels, work log, card) in the repository as they grow. Safe
# while label.sh runs: the work log is copied through SQLite's backup API (a consistent copy), the JSONL files
# as they are (a torn last line is tolerated on resume).
set -e
here=$(cd "$(dirname "$0")" && pwd)
name=leetcode-pool-qwen2.5-coder-1.5b
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/$name"
for f in /work/runs/$name/*; do
  [ -f "$f" ] || continue  # e.g. a features/ cache of bench prm-quality: derived, not kept
  case "$f" in
    *.sqlite-wal|*.sqlite-shm|*.lock) ;;
    *.sqlite) python3 -c "import sqlite3,sys; s=sqlite3.connect(sys.argv[1]); d=sqlite3.connect(sys.argv[2]); s.backup(d); d.close()" "$f" "$tmp/$name/$(basename "$f")" ;;
    *) cp "$f" "$tmp/$name/" ;;
  esac
done
tar czf "$here/code-1.5b-corpus.tar.gz" -C "$tmp" "$name"
