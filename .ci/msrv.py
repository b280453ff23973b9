#!/usr/bin/env python3
"""Fails when a locked dependency needs a newer Rust than Cargo.toml's
`rust-version` says: the declared minimum must stay true after every
dependency update (cargo only warns, and only on an older toolchain)."""
import json
import subprocess
import sys

meta = json.loads(subprocess.run(
    ["cargo", "metadata", "--format-version", "1", "--locked"],
    check=True, capture_output=True, text=True).stdout)

def version(v):
    return tuple(int(x) for x in v.split("."))

ours = next(p for p in meta["packages"] if p["id"] in meta["workspace_members"])
declared = ours.get("rust_version")
if not declared:
    sys.exit("Cargo.toml declares no rust-version")
resolved = {node["id"] for node in meta["resolve"]["nodes"]}
newer = sorted(
    (version(p["rust_version"]), p["name"], p["version"], p["rust_version"])
    for p in meta["packages"]
    if p["id"] in resolved and p.get("rust_version") and version(p["rust_version"]) > version(declared)
)
if newer:
    for _, name, ver, needs in newer:
        print(f"{name} {ver} needs Rust {needs}", file=sys.stderr)
    sys.exit(f"Cargo.toml says rust-version = \"{declared}\": raise it to {newer[-1][3]} (and README's minimum)")
readme = open("README.md", encoding="utf-8").read()
if f"Rust toolchain ({declared} or newer)" not in readme:
    sys.exit(f"README.md must say the minimum: 'Rust toolchain ({declared} or newer)'")
print(f"rust-version {declared}: no locked dependency needs more")
