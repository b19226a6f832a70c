#!/usr/bin/env python3
"""Writes the systematic sections of conformance.txt (truth tables and type
pairings) from the JMS rules, stated here a second time independently of the
Rust code; the hand-written sections live in conformance_hand.txt and are
copied in first.  Run from this directory: python3 conformance_gen.py"""

import itertools

out = [open("conformance_hand.txt").read().rstrip("\n"), ""]
w = out.append

# ---- Three-valued logic -------------------------------------------------
# Atoms: bare identifiers (t true, f false, n missing) and comparisons.
BARE = {"t": True, "f": False, "n": None}
CMP = {"i = 5": True, "i = 6": False, "x = 1": None}
PROPS = "t=b:true f=b:false i=i:5"


def AND(a, b):
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def OR(a, b):
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def NOT(a):
    return None if a is None else not a


def show(v):
    return "unknown" if v is None else ("true" if v else "false")


w("# ---- generated: AND / OR / NOT truth tables with UNKNOWN ----")
for atoms in (BARE, CMP):
    for (a, va), (b, vb) in itertools.product(atoms.items(), repeat=2):
        w(f"{a} AND {b} | {PROPS} | {show(AND(va, vb))}")
        w(f"{a} OR {b} | {PROPS} | {show(OR(va, vb))}")
    for a, va in atoms.items():
        w(f"NOT {a} | {PROPS} | {show(NOT(va))}")
        w(f"NOT NOT {a} | {PROPS} | {show(va)}")
w("# ---- generated: precedence (AND before OR, NOT before AND) ----")
for (a, va), (b, vb), (c, vc) in itertools.product(BARE.items(), repeat=3):
    w(f"{a} AND {b} OR {c} | {PROPS} | {show(OR(AND(va, vb), vc))}")
    w(f"{a} OR {b} AND {c} | {PROPS} | {show(OR(va, AND(vb, vc)))}")
    w(f"NOT {a} AND {b} OR NOT {c} | {PROPS} | {show(OR(AND(NOT(va), vb), NOT(vc)))}")
    w(f"NOT ({a} OR {b}) AND {c} | {PROPS} | {show(AND(NOT(OR(va, vb)), vc))}")

# ---- Comparisons: every type pairing ------------------------------------
IDENTS = {"l5": 5, "l7": 7, "d5": 5.0, "d25": 2.5, "sa": "abc", "sb": "abd", "bt": True, "nul": None}
IPROPS = "l5=i:5 l7=i:7 d5=d:5.0 d25=d:2.5 sa=s:'abc' sb=s:'abd' bt=b:true"
LITS = {"5": 5, "7": 7, "5.0": 5.0, "2.5": 2.5, "'abc'": "abc", "'abd'": "abd", "TRUE": True}
OPS = ["=", "<>", "<", "<=", ">", ">="]


def kind(v):
    if isinstance(v, bool):
        return "b"
    if isinstance(v, (int, float)):
        return "n"
    return "s"


def holds(op, a, b):
    return {"=": a == b, "<>": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def compare(op, a, b):
    if a is None or b is None:
        return None
    ka, kb = kind(a), kind(b)
    if ka != kb:
        return None
    if ka == "n":
        return holds(op, a, b)
    return holds(op, a, b) if op in ("=", "<>") else None


w("# ---- generated: identifier OP literal, every type pairing (no conversion) ----")
for (name, v), (lit, lv), op in itertools.product(IDENTS.items(), LITS.items(), OPS):
    w(f"{name} {op} {lit} | {IPROPS} | {show(compare(op, v, lv))}")
w("# ---- generated: identifier OP identifier ----")
for a, b in itertools.product(["l5", "d5", "sa", "bt", "nul"], repeat=2):
    va, vb = IDENTS[a], IDENTS[b]
    for op in ("=", "<>", "<"):
        w(f"{a} {op} {b} | {IPROPS} | {show(compare(op, va, vb))}")

# ---- convert_string_expressions ----------------------------------------
SPROPS = "s10=s:'10' s25=s:'2.5' sabc=s:'abc' sT=s:'TRUE' sneg=s:'-3'"
SVALS = {"s10": "10", "s25": "2.5", "sabc": "abc", "sT": "TRUE", "sneg": "-3"}
CLITS = {"10": 10, "2.5": 2.5, "3": 3, "-3": -3, "TRUE": True, "FALSE": False, "'10'": "10"}


def java_long(s):
    digits = s[1:] if s[:1] in "+-" else s
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    return int(s)


def java_double(s):
    try:
        return float(s.strip())
    except ValueError:
        return None


def convert_compare(op, s, lit):
    if isinstance(lit, bool):
        b = s.lower() == "true"
        return holds(op, b, lit) if op in ("=", "<>") else None
    if isinstance(lit, int):
        n = java_long(s)
        return None if n is None else holds(op, n, lit)
    if isinstance(lit, float):
        d = java_double(s)
        return None if d is None else holds(op, d, lit)
    return holds(op, s, lit) if op in ("=", "<>") else None


for mode in ("on", "off"):
    w(f"# ---- generated: string property OP literal, convert_string_expressions {mode} ----")
    w(f"@convert {mode}")
    for (name, s), (lit, lv), op in itertools.product(SVALS.items(), CLITS.items(), ["=", "<>", "<", ">="]):
        exp = convert_compare(op, s, lv) if mode == "on" else compare(op, s, lv)
        w(f"{name} {op} {lit} | {SPROPS} | {show(exp)}")
        if mode == "on" and op == "<":
            # The same with the literal on the left: the rule is symmetric.
            rev = convert_compare(">", s, lv)
            w(f"{lit} < {name} | {SPROPS} | {show(rev)}")
w("@convert off")

open("conformance.txt", "w").write("\n".join(out) + "\n")
