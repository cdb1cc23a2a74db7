#!/usr/bin/env python3
"""Checks that each program's --help and its man page name the same options."""
import re, subprocess, sys

build, src = sys.argv[1], sys.argv[2]
bad = 0
for prog, page in (("tools/encmig", "docs/man/encmig.1"), ("tools/encmigd", "docs/man/encmigd.8")):
    help_text = subprocess.run([f"{build}/{prog}", "--help"], capture_output=True, text=True).stdout
    man = open(f"{src}/{page}").read().replace("\\-", "-")
    opts_help = set(re.findall(r"--[a-z][a-z0-9-]*", help_text))
    opts_man = set(re.findall(r"--[a-z][a-z0-9-]*", man))
    for o in sorted(opts_help - opts_man):
        print(f"{page}: missing {o} (in {prog} --help)")
        bad += 1
    for o in sorted(opts_man - opts_help):
        print(f"{prog} --help: missing {o} (in {page})")
        bad += 1
print("man pages match --help" if not bad else f"{bad} mismatches")
sys.exit(1 if bad else 0)
