"""Parse one normalized LaTeX (or plain-text) math expression into a small, backend-free tree.

Covers: numbers (decimals kept exact as ``Fraction``), letters and subscripted symbols, ``+ - * /``,
``\\cdot \\times \\div``, implicit multiplication, ``^`` powers (``^\\circ`` becomes a degree factor),
``!``, ``\\frac``, ``\\sqrt[n]{}``, ``\\binom``, ``|x|``, floor/ceil, trig/log/exp functions (LaTeX
commands or plain names such as ``sqrt(2)``), ``\\sum_{k=a}^{b}`` / ``\\prod`` over the following
product, ``\\pi``, ``e``, ``i``, ``\\infty`` and Greek letters.

Does not cover: relations, lists, intervals, sets and matrices (``structure`` splits those first),
text answers, and evaluation (``evaluate`` and ``symbolic`` walk the tree). The parser is a plain
recursive descent with a depth limit; it never calls ``eval`` and never builds big numbers.

Tree nodes are tuples: ``("n", Fraction)``, ``("s", name)``, ``("c", "pi"|"e"|"i"|"inf"|"deg")``,
``("+", terms)``, ``("*", factors)``, ``("/", a, b)``, ``("^", base, exp)``, ``("neg", a)``,
``("f", name, args)``, ``("!", a)``.
"""

from __future__ import annotations

import re
from fractions import Fraction

Node = tuple


class ExprParseError(ValueError):
    """The text is not an expression this parser understands."""


_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*|\.\d+|\d+)"
    r"|(?P<cmd>\\[a-zA-Z]+|\\.)"
    r"|(?P<name>sqrt|arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|sec|csc|cot|log|ln|exp|pi)"
    r"|(?P<letter>[a-zA-Z])"
    r"|(?P<op>\*\*|[-+*/^_!()\[\]{}|,'°=]))"
)

FUNCTIONS = {
    "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "log", "ln", "exp", "lg",
}  # fmt: skip
GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
    "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi",
    "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
}  # fmt: skip
_IGNORED = {"\\displaystyle", "\\left", "\\right", "\\limits", "\\,", "\\;", "\\!", "\\:", "\\ "}
MAX_DEPTH = 60
MAX_TOKENS = 600


def tokens_of(text: str) -> list[tuple[str, str]]:
    """(kind, value) tokens; raises ``ExprParseError`` on a character it does not know."""
    out: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while pos < end:
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ExprParseError(f"unexpected character {text[pos]!r} in {text!r}")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        value = m.group(kind)
        if kind == "cmd" and value in _IGNORED:
            continue
        if kind == "op" and value == "**":
            value = "^"
        out.append((kind, value))
        if len(out) > MAX_TOKENS:
            raise ExprParseError("expression too long")
    return out


_STARTS_ATOM_CMDS = {
    "\\frac", "\\sqrt", "\\pi", "\\infty", "\\binom", "\\lfloor", "\\lceil", "\\operatorname",
    "\\mathrm", "\\exp", "\\vert", "\\lvert", "\\e", "\\sum", "\\prod",
}  # fmt: skip


class _Parser:
    def __init__(self, text: str):
        self.toks = tokens_of(text)
        self.i = 0
        self.depth = 0
        self.abs_open = 0

    # -- helpers ---------------------------------------------------------------------------
    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ExprParseError("unexpected end of expression")
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        tok = self.take()
        if tok[1] != value:
            raise ExprParseError(f"expected {value!r}, got {tok[1]!r}")

    def at(self, *values: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] in values

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprParseError("expression nested too deeply")

    # -- grammar ---------------------------------------------------------------------------
    def parse(self) -> Node:
        node = self.expr()
        if self.peek() is not None:
            raise ExprParseError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def expr(self) -> Node:
        self.enter()
        terms = [self.term()]
        while self.at("+", "-"):
            op = self.take()[1]
            t = self.term()
            terms.append(t if op == "+" else ("neg", t))
        self.depth -= 1
        return terms[0] if len(terms) == 1 else ("+", tuple(terms))

    def starts_atom(self) -> bool:
        tok = self.peek()
        if tok is None:
            return False
        kind, value = tok
        if kind in ("num", "letter", "name"):
            return True
        if kind == "cmd":
            return value in _STARTS_ATOM_CMDS or value[1:] in FUNCTIONS or value[1:] in GREEK
        if value == "|":
            return self.abs_open == 0
        return value in ("(", "{", "[")

    def term(self) -> Node:
        factors = [self.unary()]
        while True:
            if self.at("*", "\\cdot", "\\times", "\\ast"):
                self.take()
                factors.append(self.unary())
            elif self.at("/", "\\div"):
                self.take()
                prev = ("*", tuple(factors)) if len(factors) > 1 else factors[0]
                factors = [("/", prev, self.unary())]
            elif self.starts_atom():
                factors.append(self.power())
            else:
                break
        return factors[0] if len(factors) == 1 else ("*", tuple(factors))

    def unary(self) -> Node:
        if self.at("-"):
            self.take()
            return ("neg", self.unary())
        if self.at("+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> Node:
        base = self.postfix(self.atom())
        if self.at("^"):
            self.take()
            if self.at("\\circ", "°"):
                self.take()
                return ("*", (base, ("c", "deg")))
            if self.at("{") and self.toks[self.i + 1 : self.i + 3] == [("cmd", "\\circ"), ("op", "}")]:
                self.i += 3
                return ("*", (base, ("c", "deg")))
            exponent = self.group_or_unary_atom()
            return ("^", base, exponent)
        if self.at("°"):
            self.take()
            return ("*", (base, ("c", "deg")))
        return base

    def group_or_unary_atom(self) -> Node:
        if self.at("{"):
            self.take()
            inner = self.expr()
            self.expect("}")
            return inner
        if self.at("-"):
            self.take()
            return ("neg", self.postfix(self.atom()))
        return self.postfix(self.atom())

    def postfix(self, node: Node) -> Node:
        while self.at("!", "'"):
            if self.take()[1] == "'":
                raise ExprParseError("primes are not supported")
            node = ("!", node)
        return node

    def brace_arg(self) -> Node:
        """A ``{...}`` or ``(...)`` group, or a single token (``\\frac12``, ``\\sqrt2``)."""
        if self.at("{", "("):
            close = "}" if self.take()[1] == "{" else ")"
            inner = self.expr()
            self.expect(close)
            return inner
        kind, value = self.take()
        if kind == "num":
            if "." in value or len(value) == 1:
                return ("n", Fraction(value))
            # \frac123 means \frac{1}{23}: give back all but the first digit.
            self.toks.insert(self.i, ("num", value[1:]))
            return ("n", Fraction(value[0]))
        if kind == "letter":
            return self.letter(value)
        if kind == "cmd" and value[1:] in GREEK:
            return ("s", value[1:])
        if value == "\\pi":
            return ("c", "pi")
        raise ExprParseError(f"bad argument {value!r}")

    def letter(self, value: str) -> Node:
        if self.at("_"):
            self.take()
            if self.at("{"):
                self.take()
                sub = []
                while not self.at("}"):
                    sub.append(self.take()[1])
                self.take()
                return ("s", f"{value}_{''.join(sub)}")
            return ("s", f"{value}_{self.take()[1]}")
        if value == "e":
            return ("c", "e")
        if value == "i":
            return ("c", "i")
        return ("s", value)

    def function(self, name: str) -> Node:
        base = None
        power = None
        while self.at("_", "^"):
            which = self.take()[1]
            arg = self.group_or_unary_atom()
            if which == "_":
                base = arg
            else:
                power = arg
        if self.at("("):
            self.take()
            arg = self.expr()
            self.expect(")")
        else:
            arg = self.power()
        if power == ("neg", ("n", Fraction(1))) and name in ("sin", "cos", "tan"):
            return ("f", "arc" + name, (arg,))
        node: Node = ("f", name, (arg,) if base is None else (arg, base))
        if name == "lg":
            node = ("f", "log", (arg, ("n", Fraction(10))))
        return node if power is None else ("^", node, power)

    def big_operator(self, name: str) -> Node:
        """``\\sum_{k=a}^{b} body`` (or ``\\prod``): the body is the product of factors that follows.
        The tree is ``("f", name, (body, ("s", k), a, b))``; only ``symbolic`` evaluates it."""
        self.expect("_")
        self.expect("{")
        kind, var = self.take()
        if kind != "letter":
            raise ExprParseError(f"\\{name} needs an index variable, got {var!r}")
        self.expect("=")
        lo = self.expr()
        self.expect("}")
        self.expect("^")
        hi = self.group_or_unary_atom()
        return ("f", name, (self.term(), ("s", var), lo, hi))

    def atom(self) -> Node:
        self.enter()
        try:
            return self._atom()
        finally:
            self.depth -= 1

    def _atom(self) -> Node:
        kind, value = self.take()
        if kind == "num":
            return ("n", Fraction(value))
        if kind == "letter":
            return self.letter(value)
        if kind == "name":
            value = "\\" + value
        if value in ("(", "["):
            inner = self.expr()
            self.expect(")" if value == "(" else "]")
            return inner
        if value == "{":
            inner = self.expr()
            self.expect("}")
            return inner
        if value in ("|", "\\vert", "\\lvert"):
            self.abs_open += 1
            inner = self.expr()
            self.abs_open -= 1
            tok = self.take()
            if tok[1] not in ("|", "\\vert", "\\rvert"):
                raise ExprParseError("unclosed |")
            return ("f", "abs", (inner,))
        if value == "\\frac":
            return ("/", self.brace_arg(), self.brace_arg())
        if value == "\\binom":
            return ("f", "binom", (self.brace_arg(), self.brace_arg()))
        if value == "\\sqrt":
            if self.at("["):
                self.take()
                index = self.expr()
                self.expect("]")
                return ("f", "root", (self.brace_arg(), index))
            return ("f", "sqrt", (self.brace_arg(),))
        if value in ("\\lfloor", "\\lceil"):
            inner = self.expr()
            closing = self.take()[1]
            if closing != value.replace("\\l", "\\r"):
                raise ExprParseError(f"unclosed {value}")
            return ("f", "floor" if value == "\\lfloor" else "ceil", (inner,))
        if value in ("\\sum", "\\prod"):
            return self.big_operator(value[1:])
        if value == "\\pi":
            return ("c", "pi")
        if value == "\\infty":
            return ("c", "inf")
        if value == "\\e":
            return ("c", "e")
        if value in ("\\operatorname", "\\mathrm"):
            self.expect("{")
            name = ""
            while not self.at("}"):
                name += self.take()[1]
            self.take()
            if name in FUNCTIONS:
                return self.function(name)
            if name == "e":
                return ("c", "e")
            raise ExprParseError(f"unknown operator {name!r}")
        if value == "\\sqrt" or value[1:] == "sqrt":
            return ("f", "sqrt", (self.brace_arg(),))
        if value[1:] in FUNCTIONS:
            return self.function(value[1:])
        if value[1:] in GREEK:
            return ("s", value[1:])
        raise ExprParseError(f"unexpected {value!r}")


def parse_expr(text: str) -> Node:
    """The tree of one expression; raises ``ExprParseError`` when it is not one."""
    if not text.strip():
        raise ExprParseError("empty expression")
    return _Parser(text).parse()


def symbols_of(node: Node) -> set[str]:
    """Names of the free symbols in a tree."""
    if node[0] == "s":
        return {node[1]}
    found: set[str] = set()
    for child in node[1:]:
        if isinstance(child, tuple):
            for c in child if child and isinstance(child[0], tuple) else (child,):
                if isinstance(c, tuple):
                    found |= symbols_of(c)
    return found
