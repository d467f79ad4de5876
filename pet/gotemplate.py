"""Go text/template, the subset that Ollama's chat templates use, rendered as Go renders it.

Ollama renders a Modelfile's TEMPLATE with Go's text/template. PET checks, before it exports, that
its TEMPLATE gives the same tokens as the string the tier was trained on, so it must render the
template text itself, not a Python look-alike of it. Supported: text with `{{- ... -}}` trimming,
comments, `if`/`else if`/`else`, `range` (with `$i, $x :=` and `else`), `with`, `break`, `continue`,
variables (`:=` and `=`, scoped as in Go), fields (`.A.B`, `$x.A`, `(pipeline).A`), string, number and
boolean literals, pipelines with `|`, and the functions and, or, not, eq, ne, lt, le, gt, ge, len,
index, slice, print, json. Anything else raises GoTemplateError naming the place.

Data: dicts stand for Go structs and maps. A field a dict lacks is an error (as for a Go struct),
so `.content` for `.Content` is caught rather than printed as nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from pet import PetError


class GoTemplateError(PetError):
    pass


_WS = " \t\r\n"


# -- lexing ---------------------------------------------------------------------------------------
def _split(src: str) -> list[tuple[str, str, int]]:
    """[(kind, text, line)]: kind "text" or "action"; trim markers already applied to the text."""
    out: list[tuple[str, str, int]] = []
    pos, trim_next = 0, False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        if trim_next:
            text = text.lstrip(_WS)
        line = src.count("\n", 0, pos) + 1
        if start < 0:
            if text:
                out.append(("text", text, line))
            return out
        body_start = start + 2
        trim_left = src.startswith("-", body_start) and body_start + 1 < len(src) and src[body_start + 1] in _WS
        if trim_left:
            text = text.rstrip(_WS)
            body_start += 2
        if text:
            out.append(("text", text, line))
        end = _find_close(src, body_start)
        if end < 0:
            raise GoTemplateError(f"template line {src.count(chr(10), 0, start) + 1}: unclosed action")
        body_end = end
        trim_next = end >= 2 and src[end - 1] == "-" and src[end - 2] in _WS
        if trim_next:
            body_end = end - 2
        out.append(("action", src[body_start:body_end].strip(_WS), src.count("\n", 0, start) + 1))
        pos = end + 2


def _find_close(src: str, i: int) -> int:
    """Index of the `}}` that ends the action starting at i (string literals may contain braces)."""
    n = len(src)
    while i < n:
        c = src[i]
        if c in "\"`":
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if (c == '"' and src[j] == "\\") else 1
            i = j + 1
            continue
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            if j < 0:
                return -1
            i = j + 2
            continue
        if src.startswith("}}", i):
            return i
        i += 1
    return -1


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<str>"(?:\\.|[^"\\])*")
  | (?P<raw>`[^`]*`)
  | (?P<op>:=|=|\||,|\(|\))
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""", re.X)


@dataclass
class _Tok:
    kind: str
    text: str
    spaced: bool  # whitespace before it (a field right after `)` chains onto the parenthesis)


def _tokens(action: str, line: int) -> list[_Tok]:
    toks, pos, spaced = [], 0, True
    while pos < len(action):
        m = _TOKEN.match(action, pos)
        if not m:
            raise GoTemplateError(f"template line {line}: cannot read {action[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup == "ws":
            spaced = True
            continue
        toks.append(_Tok(m.lastgroup, m.group(), spaced))
        spaced = False
    return toks


# -- syntax tree ------------------------------------------------------------------------------------
@dataclass
class Lit:
    value: object


@dataclass
class Field:
    base: object  # "." (dot), "$name" (a variable) or a Pipe (a parenthesised pipeline)
    names: list[str]


@dataclass
class Func:
    name: str


@dataclass
class Pipe:
    cmds: list[list]  # each command: a list of operands (Lit, Field, Func, Pipe)
    decl: list[str] = field(default_factory=list)
    assign: str = ""  # ":=" or "=" when decl is set
    line: int = 0


@dataclass
class If:
    branches: list  # [(Pipe, body)]
    else_body: list


@dataclass
class Range:
    pipe: Pipe
    body: list
    else_body: list


@dataclass
class With:
    pipe: Pipe
    body: list
    else_body: list


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


FUNCS = ("and", "or", "not", "eq", "ne", "lt", "le", "gt", "ge", "len", "index", "slice", "print", "json")


def _literal(tok: _Tok):
    if tok.kind == "str":
        return Lit(json.loads(tok.text))  # Go's double-quoted escapes are JSON's for what templates use
    if tok.kind == "raw":
        return Lit(tok.text[1:-1])
    if tok.kind == "num":
        return Lit(float(tok.text) if "." in tok.text else int(tok.text))
    return None


class _Parser:
    def __init__(self, src: str):
        self.items = _split(src)
        self.i = 0

    def parse(self) -> list:
        body, end = self.block(())
        if end is not None:
            raise GoTemplateError(f"template line {end[1]}: unexpected {{{{{end[0]}}}}}")
        return body

    def block(self, stops: tuple[str, ...]):
        """Nodes up to one of the keywords in stops; returns (nodes, (keyword action, line) or None)."""
        nodes = []
        while self.i < len(self.items):
            kind, text, line = self.items[self.i]
            self.i += 1
            if kind == "text":
                nodes.append(text)
                continue
            if text.startswith("/*"):
                if not text.endswith("*/"):
                    raise GoTemplateError(f"template line {line}: a comment must fill its action")
                continue
            word = text.split(None, 1)[0] if text else ""
            if word in ("end", "else"):
                if word not in stops:
                    raise GoTemplateError(f"template line {line}: unexpected {{{{{text}}}}}")
                return nodes, (text, line)
            if word == "if":
                nodes.append(self.if_(text[2:], line))
            elif word in ("range", "with"):
                pipe = self.pipe(text[len(word):], line, allow_decl=word == "range")
                body, end = self.block(("end", "else"))
                else_body = []
                if end and end[0] == "else":
                    else_body, end = self.block(("end",))
                if end is None:
                    raise GoTemplateError(f"template line {line}: {{{{{word}}}}} has no {{{{end}}}}")
                nodes.append(Range(pipe, body, else_body) if word == "range" else With(pipe, body, else_body))
            elif word in ("break", "continue") and text == word:
                nodes.append(word)
            elif word in ("define", "template", "block"):
                raise GoTemplateError(f"template line {line}: {{{{{word}}}}} is not supported")
            else:
                nodes.append(self.pipe(text, line, allow_decl=True))
        if stops:
            raise GoTemplateError(f"template: missing {{{{end}}}} (expected one of {', '.join(stops)})")
        return nodes, None

    def if_(self, cond: str, line: int) -> If:
        branches, else_body = [], []
        pipe = self.pipe(cond, line)
        while True:
            body, end = self.block(("end", "else"))
            if end is None:
                raise GoTemplateError(f"template line {line}: {{{{if}}}} has no {{{{end}}}}")
            branches.append((pipe, body))
            text, eline = end
            if text == "end":
                return If(branches, else_body)
            rest = text[4:].strip()
            if rest.startswith("if ") or rest.startswith("if\t"):
                pipe = self.pipe(rest[2:], eline)
                continue
            if rest:
                raise GoTemplateError(f"template line {eline}: unexpected {{{{{text}}}}}")
            else_body, end = self.block(("end",))
            if end is None or end[0] != "end":
                raise GoTemplateError(f"template line {line}: {{{{if}}}} has no {{{{end}}}}")
            return If(branches, else_body)

    def pipe(self, text: str, line: int, allow_decl: bool = False) -> Pipe:
        toks = _tokens(text, line)
        decl, assign = [], ""
        # `$x :=`, `$x =`, `$i, $x :=`
        j = 0
        names = []
        while j < len(toks) and toks[j].kind == "var" and "." not in toks[j].text:
            names.append(toks[j].text)
            if j + 1 < len(toks) and toks[j + 1].text == ",":
                j += 2
                continue
            j += 1
            break
        if names and j < len(toks) and toks[j].text in (":=", "="):
            if not allow_decl:
                raise GoTemplateError(f"template line {line}: a variable cannot be declared here")
            decl, assign, toks = names, toks[j].text, toks[j + 1:]
        pos, cmds = self.commands(toks, 0, line)
        if pos != len(toks):
            raise GoTemplateError(f"template line {line}: unexpected {toks[pos].text!r}")
        if not cmds:
            raise GoTemplateError(f"template line {line}: missing value")
        return Pipe(cmds, decl, assign, line)

    def commands(self, toks: list[_Tok], pos: int, line: int):
        cmds, cmd = [], []
        while pos < len(toks):
            t = toks[pos]
            if t.text == ")":
                break
            if t.text == "|":
                if not cmd:
                    raise GoTemplateError(f"template line {line}: missing command before |")
                cmds.append(cmd)
                cmd = []
                pos += 1
                continue
            if t.text == "(":
                pos, inner = self.commands(toks, pos + 1, line)
                if pos >= len(toks) or toks[pos].text != ")":
                    raise GoTemplateError(f"template line {line}: unclosed (")
                pos += 1
                node = Pipe(inner, line=line)
                if pos < len(toks) and toks[pos].kind == "field" and not toks[pos].spaced and toks[pos].text != ".":
                    node = Field(node, toks[pos].text.split(".")[1:])
                    pos += 1
                cmd.append(node)
                continue
            lit = _literal(t)
            if lit is not None:
                cmd.append(lit)
            elif t.kind == "var":
                parts = t.text.split(".")
                cmd.append(Field(parts[0], parts[1:]))
            elif t.kind == "field":
                cmd.append(Field(".", [] if t.text == "." else t.text.split(".")[1:]))
            elif t.kind == "ident":
                if t.text in ("true", "false"):
                    cmd.append(Lit(t.text == "true"))
                elif t.text == "nil":
                    cmd.append(Lit(None))
                elif t.text in FUNCS:
                    cmd.append(Func(t.text))
                else:
                    raise GoTemplateError(f"template line {line}: function {t.text!r} not defined")
            else:
                raise GoTemplateError(f"template line {line}: unexpected {t.text!r}")
            pos += 1
        if cmd:
            cmds.append(cmd)
        return pos, cmds


# -- evaluation -------------------------------------------------------------------------------------
def truth(v) -> bool:
    if v is None or v is False:
        return False
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v != 0
    if isinstance(v, (str, list, tuple, dict)):
        return len(v) > 0
    return True


def show(v) -> str:
    """Print a value as Go's fmt does for the types templates meet."""
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(show(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{show(v[k])}" for k in sorted(v)) + "]"
    return str(v)


class _Exec:
    def __init__(self, data):
        self.root = data
        self.scopes: list[dict] = [{"$": data}]
        self.out: list[str] = []

    def var(self, name: str, line: int):
        for s in reversed(self.scopes):
            if name in s:
                return s[name]
        raise GoTemplateError(f"template line {line}: undefined variable {name}")

    def set_var(self, name: str, value, line: int):
        for s in reversed(self.scopes):
            if name in s:
                s[name] = value
                return
        raise GoTemplateError(f"template line {line}: undefined variable {name}")

    def run(self, nodes: list, dot) -> None:
        for n in nodes:
            if isinstance(n, str):
                if n == "break":
                    raise _Break()
                if n == "continue":
                    raise _Continue()
                self.out.append(n)
            elif isinstance(n, Pipe):
                v = self.pipe(n, dot)
                if not n.decl:
                    self.out.append(show(v))
            elif isinstance(n, If):
                for cond, body in n.branches:
                    if truth(self.pipe(cond, dot)):
                        self.scoped(body, dot)
                        break
                else:
                    self.scoped(n.else_body, dot)
            elif isinstance(n, With):
                v = self.value_of(n.pipe, dot)
                self.scoped(n.body, v) if truth(v) else self.scoped(n.else_body, dot)
            elif isinstance(n, Range):
                self.range_(n, dot)

    def scoped(self, body: list, dot, extra: dict | None = None) -> None:
        self.scopes.append(dict(extra or {}))
        try:
            self.run(body, dot)
        finally:
            self.scopes.pop()

    def range_(self, n: Range, dot) -> None:
        seq = self.value_of(n.pipe, dot)
        if isinstance(seq, dict):
            pairs = [(k, seq[k]) for k in sorted(seq)]
        elif isinstance(seq, (list, tuple)):
            pairs = list(enumerate(seq))
        elif isinstance(seq, int) and not isinstance(seq, bool):
            pairs = [(i, i) for i in range(seq)]
        elif seq is None:
            pairs = []
        else:
            raise GoTemplateError(f"template line {n.pipe.line}: range can't iterate over {show(seq)}")
        if not pairs:
            self.scoped(n.else_body, dot)
            return
        for k, v in pairs:
            extra = {}
            if len(n.pipe.decl) == 1:
                extra[n.pipe.decl[0]] = v
            elif len(n.pipe.decl) == 2:
                extra[n.pipe.decl[0]], extra[n.pipe.decl[1]] = k, v
            try:
                self.scoped(n.body, v, extra)
            except _Continue:
                continue
            except _Break:
                break

    def value_of(self, p: Pipe, dot):
        """A control pipeline's value (range/with declare their variables themselves)."""
        return self.cmds(p.cmds, dot, p.line)

    def pipe(self, p: Pipe, dot):
        v = self.cmds(p.cmds, dot, p.line)
        if p.decl:
            if len(p.decl) != 1:
                raise GoTemplateError(f"template line {p.line}: too many declarations")
            if p.assign == ":=":
                self.scopes[-1][p.decl[0]] = v
            else:
                self.set_var(p.decl[0], v, p.line)
        return v

    def cmds(self, cmds: list, dot, line: int):
        piped, have = None, False
        for cmd in cmds:
            piped = self.command(cmd, dot, line, piped if have else _NONE)
            have = True
        return piped

    def command(self, cmd: list, dot, line: int, piped):
        head = cmd[0]
        if isinstance(head, Func):
            args = cmd[1:] + ([Lit(piped)] if piped is not _NONE else [])
            return self.call(head.name, args, dot, line)
        if len(cmd) > 1 or piped is not _NONE:
            raise GoTemplateError(f"template line {line}: can't give arguments to a non-function")
        return self.operand(head, dot, line)

    def operand(self, node, dot, line: int):
        if isinstance(node, Lit):
            return node.value
        if isinstance(node, Pipe):
            return self.cmds(node.cmds, dot, line)
        if isinstance(node, Func):
            return self.call(node.name, [], dot, line)
        if isinstance(node, Field):
            if node.base == ".":
                v = dot
            elif isinstance(node.base, Pipe):
                v = self.cmds(node.base.cmds, dot, line)
            else:
                v = self.var(node.base, line)
            for name in node.names:
                if not isinstance(v, dict):
                    raise GoTemplateError(f"template line {line}: can't evaluate field {name} in {show(v)}")
                if name not in v:
                    raise GoTemplateError(f"template line {line}: can't evaluate field {name} "
                                          f"(the data has {', '.join(sorted(v))})")
                v = v[name]
            return v
        raise GoTemplateError(f"template line {line}: bad operand")

    def call(self, name: str, args: list, dot, line: int):
        ev = lambda a: self.operand(a, dot, line)  # noqa: E731
        if name in ("and", "or"):  # short-circuit, returning the deciding value (Go 1.18+)
            if not args:
                raise GoTemplateError(f"template line {line}: {name} needs arguments")
            v = None
            for a in args:
                v = ev(a)
                if truth(v) != (name == "and"):
                    return v
            return v
        vals = [ev(a) for a in args]
        need = {"not": 1, "len": 1, "lt": 2, "le": 2, "gt": 2, "ge": 2, "ne": 2}
        if name in need and len(vals) != need[name]:
            raise GoTemplateError(f"template line {line}: {name} takes {need[name]} argument(s), got {len(vals)}")
        try:
            if name == "not":
                return not truth(vals[0])
            if name == "eq":
                if len(vals) < 2:
                    raise GoTemplateError(f"template line {line}: eq needs two arguments")
                return any(vals[0] == v for v in vals[1:])
            if name == "ne":
                return vals[0] != vals[1]
            if name in ("lt", "le", "gt", "ge"):
                a, b = vals
                return {"lt": a < b, "le": a <= b, "gt": a > b, "ge": a >= b}[name]
            if name == "len":
                return len(vals[0])
            if name == "index":
                v = vals[0]
                for k in vals[1:]:
                    v = v[k]
                return v
            if name == "slice":
                v = vals[0]
                if len(vals) == 1:
                    return v
                if len(vals) == 2:
                    return v[vals[1]:]
                return v[vals[1]:vals[2]]
            if name == "print":  # fmt.Sprint: a space between operands when neither is a string
                out = ""
                for k, v in enumerate(vals):
                    if k and not isinstance(v, str) and not isinstance(vals[k - 1], str):
                        out += " "
                    out += show(v)
                return out
            if name == "json":
                return json.dumps(vals[0], ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        except (TypeError, IndexError, KeyError) as e:
            raise GoTemplateError(f"template line {line}: {name}: {e}") from None
        raise GoTemplateError(f"template line {line}: function {name!r} not defined")


_NONE = object()


def parse(src: str) -> list:
    return _Parser(src).parse()


def render(src: str, data) -> str:
    """Render Go template text with data (dicts for structs and maps, lists for slices)."""
    ex = _Exec(data)
    try:
        ex.run(parse(src), data)
    except (_Break, _Continue):
        raise GoTemplateError("template: break or continue outside a range") from None
    return "".join(ex.out)


def ollama_values(messages: list[dict]) -> dict:
    """The data Ollama gives a chat template: .System (the system messages joined) and .Messages,
    with consecutive messages of one role merged, as Ollama's template package collates them."""
    system, collated = [], []
    for m in messages:
        if m["role"] == "system":
            system.append(m["content"])
        if collated and collated[-1]["Role"] == m["role"]:
            collated[-1]["Content"] += "\n\n" + m["content"]
        else:
            collated.append({"Role": m["role"], "Content": m["content"], "Thinking": "", "Images": None,
                             "ToolCalls": None, "ToolName": ""})
    return {"System": "\n\n".join(system), "Messages": collated, "Tools": None, "Response": "",
            "Think": False, "ThinkLevel": "", "IsThinkSet": False}
