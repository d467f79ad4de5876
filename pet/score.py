"""The PET score: a deterministic 0-100 rubric for a prompt, built on PET's blocks.

No model, no randomness, a few milliseconds per prompt: the "Score my prompt" box, the benchmark
and best-of-N decoding all call it.

How a prompt is scored
----------------------
Nine parts earn points. Each detector gives full credit (1), half credit (0.5) or none, from
patterns a reader can check (the `why` of each block says which pattern fired):

==========  ======  ==========================================================================
block       points  full credit                              half credit
==========  ======  ==========================================================================
WHO         12      a role: "You are a ...", "Act as ..."    "as a/an <expert>" inside a line
WHAT        16      a task sentence of 5+ words led by a     a shorter task sentence
                    task verb ("Write ...", "Task: ...")
USE         12      material: "Context:"/"Facts:" lines,     "below", "the following",
                    <tags>, code fences, [slots]             "based on"
HOW         14      two format signals (Format:/Output:,     one of them
                    "under 200 words", table, JSON, bullets,
                    sections, subject line, ...)
DON'T       10      an instruction that starts "Avoid",      "without", "no more than",
                    "Do not", "Never", "must not"            "only"
THINK       10      steps ("Steps:", "Work through", "step   a numbered list, "check",
                    by step"), a self-check ("Before ...,    "if unsure, say so"
                    check"), or ask-first
SHOW        8       "Example:", "For example", a sample      "e.g.", "such as"
AUDIENCE    8       "Tone:", "Audience:", "readers",         a tone word (friendly, formal,
                    "voice", "write like"                    plain, ...) or "for beginners"
SUCCESS     10      "Success means", "a good X ...",         "so that", "must include"
                    "criteria", "the goal is", "done when"
==========  ======  ==========================================================================

Then penalties are taken off (the total is clamped to 0-100):

- answering (40): the text carries out the request instead of rewriting it as a prompt
  (`is_answer_not_rewrite`): it opens like an answer ("Sure!", "Here's a poem", "Dear ...") or
  signs off like a letter and gives almost no instructions, or gives no instruction at all.
- drift (up to 25, only when the request is known): the share of the request's content words the
  prompt keeps (`keeps_subject`); full penalty at 0, none from 0.6 up.
- vague (up to 15): vague words ("something", "stuff", "etc", "good", ...) at 2.5 points per
  hit per 100 words (at most 10), plus up to 10 for a prompt too short to be specific (under 25 words).
- ramble (up to 20): one point per 20 words over 450 (at most 15), plus repeated lines or
  repeated 6-word runs (30 x their share, at most 15).

The "Blocks added:" line PET writes after the prompt is not part of the prompt: it is dropped
before scoring (`split_blocks_line`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

# (key, label, points): the order the UI lists them.
BLOCKS = (
    ("who", "WHO (role)", 12),
    ("what", "WHAT (task)", 16),
    ("use", "USE (material)", 12),
    ("how", "HOW (format, length)", 14),
    ("dont", "DON'T (constraints)", 10),
    ("think", "THINK (steps, self-check)", 10),
    ("show", "SHOW (example)", 8),
    ("audience", "Audience / tone", 8),
    ("success", "Success criteria", 10),
)
WEIGHTS = {k: w for k, _, w in BLOCKS}
LABELS = {k: lab for k, lab, _ in BLOCKS}
PENALTY_MAX = {"answering": 40.0, "drift": 25.0, "vague": 15.0, "ramble": 20.0}
assert sum(WEIGHTS.values()) == 100

_F = re.I | re.M
# A sentence or line start: the beginning of a line (after a bullet or number), or after . ! ? :
_START = r"(?:^|(?<=[.!?:])\s+|^\s*(?:[-*•]|\d+[.)])\s+)"
# A clause start for task sentences: also after a comma or a sequencing word ("Then recommend ...").
_CLAUSE = (r"(?:^|(?<=[.!?:,])\s+|^\s*(?:[-*•]|\d+[.)])\s+)"
           r"(?:(?:then|and|now|finally|first|next|also),?\s+)?")

TASK_VERBS = (
    "write|create|draft|compose|generate|produce|design|build|make|prepare|plan|outline|explain|review|"
    "summari[sz]e|rewrite|edit|translate|analy[sz]e|compare|recommend|suggest|list|give|help|describe|"
    "propose|develop|turn|convert|refactor|fix|debug|identify|find|evaluate|assess|critique|teach|"
    "coach|brainstorm|research|calculate|estimate|answer|replace|add|name|come up with|put together|"
    "tell|show|walk me through|set up|organi[sz]e|schedule|rank|score|grade|check|improve|optimi[sz]e"
)

_WHO_FULL = re.compile(_START + r"(?:you are|you're|act as|acting as|imagine you are|pretend (?:to be|you are)|"
                       r"you (?:write|work as|speciali[sz]e in|teach|coach|review|design|edit)\b|"
                       r"take the role|role\s*:|as an? [a-z-]+ (?:[a-z-]+ )?(?:who|with|that),)", _F)
_WHO_HALF = re.compile(r"\b(?:you are an?|as an? (?:expert|senior|experienced|professional|seasoned|"
                       r"[a-z-]+(?:er|or|ist|ian|ant|ent|ect))\b)", re.I)

_WHAT_LEAD = re.compile(_CLAUSE + r"(?:task\s*:|your (?:task|job|goal) is|i (?:want|need) you to|please\s+)?"
                        r"(?:" + TASK_VERBS + r")\b([^\n.!?]*)", _F)
_WHAT_LABEL = re.compile(_START + r"(?:task|goal|deliverable|objective)\s*:\s*\S", _F)

_USE_FULL = re.compile(r"(?:^|\n)\s*(?:context|background|facts?|input|material|details|data|source|"
                       r"information|situation|about (?:me|us|the)[^:\n]{0,30}|what i have)[^:\n]{0,40}:|"
                       r"<[a-z_][a-z0-9_ -]{0,30}>|```|\"\"\"|\[[^\]\n]{2,200}\]", re.I)
_USE_HALF = re.compile(r"\b(?:below|the following|based on|given|attached|pasted|here is|here are|from the)\b", re.I)

_HOW = [
    re.compile(_START + r"(?:format|output|structure|length|layout|sections?|deliverable|response format|"
               r"requirements|constraints|rules|each [a-z]+)"
               r"[^:\n]{0,20}:", _F),
    re.compile(r"\b(?:under|at most|no more than|about|around|max(?:imum)?|up to|exactly|in)?\s*\d+(?:\s*[-–]\s*\d+)?"
               r"\s*(?:(?:short|long|full|bullet|relevant|key|clear)\s+)?(?:hashtags?|words?|sentences?|bullets?|bullet points?|paragraphs?|lines?|items?|pages?|characters?|"
               r"slides?|tips?|ideas?|examples?|questions?|options?|points?|rows?|columns?|sections?|"
               r"minutes?|steps?|names?|variations?|headlines?)\b", re.I),
    re.compile(r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|a few|single)\s+(?:short\s+)?"
               r"(?:words?|sentences?|bullets?|paragraphs?|lines?|items?|pages?|slides?|tips?|ideas?|examples?|"
               r"questions?|options?|points?|rows?|columns?|sections?)\b", re.I),
    re.compile(r"\b(?:table|json|csv|markdown|bullet(?:ed)? (?:list|points?)|bullets|numbered list|headings?|"
               r"code block|subject line|checklist|yaml|one-liner|tl;?dr|outline)\b", re.I),
]

_DONT_FULL = re.compile(_START + r"(?:avoid|do not|don't|dont|never|must not|should not|refrain|no jargon|"
                        r"leave out|exclude|skip)\b|\b(?:you|it) (?:must|should) (?:not|never)\b", _F)
_DONT_HALF = re.compile(r"\b(?:without|no more than|do not|don't|never|only use|use only|not include)\b", re.I)

_THINK_FULL = re.compile(
    r"(?:^|\n)\s*(?:steps?|process|approach|method|reasoning|work through it)[^:\n]{0,30}:|"
    r"\bstep[- ]by[- ]step\b|\bwork through\b|\bthink (?:through|about|carefully)\b|"
    r"\bbefore (?:[a-z]+ing|you [a-z]+)\b|\b(?:then|and) (?:check|verify|review|test)\b|\bself-check\b|"
    r"\bask me\b[^.\n]{0,80}\b(?:before|first|then wait|and wait)\b|\bfirst,? ask\b|\bdouble-check\b", re.I)
_THINK_HALF = re.compile(r"(?:^\s*\d+[.)]\s+\S.*\n(?:.*\n){0,3}?\s*\d+[.)]\s+\S)|\b(?:check|verify|confirm|"
                         r"if (?:you are |you're )?(?:unsure|not sure|uncertain)|say so|ask me)\b", _F)

_SHOW_FULL = re.compile(r"(?:^|\n)\s*(?:[a-z]+ )?(?:examples?|sample|e\.g\.)\b[^:\n]{0,40}:|\blike this\s*:|\bfor (?:example|instance)\b|"
                        r"\b(?:like|in) this (?:format|style|one)\b|\bhere is an example\b|\bsample (?:line|output|"
                        r"answer|entry|row)\b|\bexample (?:line|output|answer|entry|row)\b|"
                        r"\bsimilar to this\b", re.I)
_SHOW_HALF = re.compile(r"\be\.g\.|\bsuch as\b|\blike \"", re.I)

_AUD_FULL = re.compile(r"(?:^|\n)\s*(?:tone|audience|voice|style|reader|readers)[^:\n]{0,20}:|\baudiences?\b|"
                       r"\breaders?\b|\bin a [a-z, -]{0,30}\b(?:tone|voice|style)\b|\bwrite like\b|"
                       r"\btone\b|\bfor (?:a |an )?(?:non-technical|general|lay|beginner|expert|technical)\b", re.I)
_AUD_HALF = re.compile(r"\b(?:friendly|formal|informal|casual|plain|warm|professional|conversational|playful|"
                       r"neutral|encouraging|empathetic|polite|respectful|upbeat|serious|humou?rous|"
                       r"beginners?|kids|children|students|customers|clients|managers|executives)\b", re.I)

_SUCCESS_FULL = re.compile(r"\bsuccess(?:ful)?\b|\bcriteria\b|\ba (?:good|great|strong|successful) [a-z-]+(?: [a-z-]+)?"
                           r" (?:is|lets|lets|should|will|must|makes|answers|gives|leaves|reads|has)\b|"
                           r"\bthe goal (?:is|here)\b|\bdone when\b|\bmeasured by\b|\bacceptance\b|"
                           r"\bit works (?:if|when)\b|\bthe aim is\b|\bso that (?:i|we|a|the|they|readers?)\b"
                           r"[^.\n]{0,60}\bcan\b", re.I)
_SUCCESS_HALF = re.compile(r"\bso that\b|\bmust (?:include|cover|be|have|show|mention)\b|\bthe result should\b|"
                           r"\bgoal\b|\bin order to\b", re.I)

# -- answering instead of rewriting ---------------------------------------------------------------
_PROMPT_PREAMBLE = re.compile(r"^\W*(?:sure|certainly|of course|okay|ok|absolutely)?[!,.]?\s*(?:here(?:'s| is| are)"
                              r" (?:an? |the |your |my )?(?:improved|rewritten|revised|better|refined|enhanced|"
                              r"updated|clearer|stronger)?\s*(?:version of (?:your|the) )?prompts?\b)", re.I)
_ANSWER_OPEN = re.compile(r"^\W*(?:sure|certainly|of course|absolutely|okay|ok|great question|good question|"
                          r"here(?:'s| is| are)|hi|hello|hey|dear|subject\s*:|title\s*:|once upon|as an ai|"
                          r"i'd be happy|i would be happy|i can help|i'm sorry|i am sorry|i cannot|i can't|"
                          r"yes|no,|the answer is|in short)\b", re.I)
_SIGN_OFF = re.compile(r"(?:^|\n)\s*(?:best(?: regards)?|kind regards|warm regards|sincerely|cheers|thanks|"
                       r"thank you|yours(?: truly)?|regards)\s*,?\s*\n\s*\S", re.I)
_FIRST_PERSON = re.compile(r"\b(?:i recommend|i suggest|i hope|i would recommend|i'd recommend|in conclusion|"
                           r"hope this helps|let me know if)\b", re.I)
# A rough request asks for something; an answer does not ("can you ...", "i need ...", "... ?").
_REQUEST_LIKE = re.compile(r"^\W*(?:can you|could you|would you|will you|help me|i need|i want|i'd like|i would like|"
                           r"need|want|how (?:do|can|should|would) i|what|why|which|is there|should i|pls|please)\b|"
                           r"\b(?:help me|i need|i want|can you|could you|pls|please)\b|\?\s*$", re.I)
_DIRECTIVE = [
    re.compile(_START + r"(?:you are|you're|act as|you write|you work as)\b", _F),
    re.compile(_START + r"(?:please\s+)?(?:write|create|draft|compose|generate|produce|design|build|prepare|"
               r"plan|outline|explain|review|summari[sz]e|rewrite|translate|analy[sz]e|compare|list|give me|"
               r"help me|describe|propose|turn|convert|refactor|suggest|recommend|critique|brainstorm|"
               r"ask me|tell me|walk me through)\b", _F),
    re.compile(r"(?:^|\n)\s*(?:task|format|output|context|tone|avoid|audience|steps|constraints|requirements|"
               r"rules|role|input|facts|length|style)\s*:", re.I),
    re.compile(r"\[[^\]\n]{2,200}\]"),
    re.compile(r"\b(?:your (?:task|answer|response|reply|output)|respond (?:with|in)|reply (?:with|in)|"
               r"answer (?:in|with)|the user|i want you to|i need you to)\b", re.I),
    re.compile(r"^\s*blocks added\s*:", _F),
    # The same openers in the other languages PET's examples cover (es, fr, de, pt, it, nl).
    re.compile(_START + r"(?:eres|sei|tu es|vous êtes|du bist|sie sind|você é|és|je bent|u bent)\s+(?:un|una|une|ein|"
               r"eine|einen|um|uma|een)\b", _F),
    re.compile(_START + r"(?:escribe|redacta|crea|prepara|scrivi|crea|prepara|écris|rédige|crée|prépare|schreibe|"
               r"erstelle|verfasse|escreva|crie|prepare|schrijf|maak)\b", _F),
]

# -- subject drift --------------------------------------------------------------------------------
STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren as at be because been before being below
between both but by can cannot could did do does doing don down during each few for from further get gets
got had has have having he her here hers herself him himself his how i if in into is isn it its itself just
let me more most my myself no nor not of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those through to
too under until up very was we were what when where which while who whom why will with would you your yours
yourself yourselves im ive id dont cant wont isnt thats whats theres lets one two like really pls plz please
rn lol ok okay gonna wanna kinda sorta thing things stuff something anything everything even still much many
way want need needs needed help make makes made improve improved prompt prompts better fix rewrite can could
new good nice use using used know think try trying go going sure also etc via per
""".split())
_WORD = re.compile(r"[a-z][a-z0-9']+")

VAGUE = re.compile(r"\b(?:something|somehow|stuff|things?|etc|whatever|kind of|sort of|a bit|good|nice|"
                   r"interesting|various|appropriate|relevant|as needed|if needed|maybe|probably|some sort|"
                   r"and so on|more or less|a lot|lots of|cool|awesome|amazing)\b", re.I)
SHORT_WORDS = 25
LONG_WORDS = 450

_BLOCKS_LINE = re.compile(r"^\W*blocks added\s*:.*$", re.I | re.M)


# -- public predicates ------------------------------------------------------------------------------

def split_blocks_line(text: str) -> tuple[str, str | None]:
    """(the prompt, the "Blocks added:" line or None). The prompt is everything before that line."""
    m = _BLOCKS_LINE.search(text or "")
    if not m:
        return (text or "").strip(), None
    return text[:m.start()].strip(), m.group(0).strip()


def has_blocks_line(text: str) -> bool:
    """Does the answer carry PET's "Blocks added:" line?"""
    return split_blocks_line(text)[1] is not None


def words(text: str) -> list[str]:
    return (text or "").split()


def _stem(w: str) -> str:
    """A crude stem: enough to match photo/photos, rename/renaming, restaurant/restaurants."""
    w = w.strip("'").removesuffix("'s")
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    for suf in ("ing", "ed", "es", "s"):
        if w.endswith(suf) and len(w) - len(suf) >= 3:
            w = w[: -len(suf)]
            break
    return w[:5]


def content_words(text: str) -> list[str]:
    """The request's subject words: lowercased words of 3+ letters that are not stopwords or PET's
    meta words ("improve this prompt", "make it better"), in order, without repeats."""
    out = []
    for w in _WORD.findall((text or "").lower()):
        w = w.strip("'")
        if len(w) >= 3 and w not in STOPWORDS and not w.isdigit() and w not in out:
            out.append(w)
    return out


def subject_coverage(request: str, text: str) -> tuple[float, list[str]]:
    """(the share of the request's content words found in `text` by stem, the words not found)."""
    want = content_words(request)
    if not want:
        return 1.0, []
    have = {_stem(w) for w in _WORD.findall((text or "").lower())}
    missing = [w for w in want if _stem(w) not in have]
    return 1.0 - len(missing) / len(want), missing


def keeps_subject(request: str, text: str) -> float:
    """0-1: how much of the request's subject the text keeps (content-word overlap by stem).

    1.0 when the request has no content words (nothing to drift from)."""
    return round(subject_coverage(request, text)[0], 4)


def directive_signals(text: str) -> int:
    """How many distinct kinds of instruction-to-a-model the text carries (0-8)."""
    return sum(1 for p in _DIRECTIVE if p.search(text or ""))


def is_answer_not_rewrite(request: str | None, text: str) -> bool:
    """True when `text` carries out the request instead of rewriting it as a prompt.

    An answer opens like one ("Sure!", "Here's a poem", "Dear team", "Subject:") or signs off like a
    letter, or recommends in the first person, and gives at most one kind of instruction to a model;
    or it is substantial (3+ lines or 60+ words), gives no instruction at all and asks for nothing
    (a poem, an essay, a code listing; a rough request like "can you help me ..." asks). "Here is an improved prompt:"
    followed by a prompt is a rewrite, not an answer. `request` is accepted for callers that have it;
    the decision reads the text alone so a prompt scores the same with or without its request."""
    body, _ = split_blocks_line(text or "")
    if not body.strip():
        return False
    if _PROMPT_PREAMBLE.match(body):
        body = _PROMPT_PREAMBLE.sub("", body, count=1).lstrip(" :\n")
    d = directive_signals(body)
    answerish = bool(_ANSWER_OPEN.match(body) or _SIGN_OFF.search(body) or _FIRST_PERSON.search(body))
    if answerish and d <= 1:
        return True
    lines = sum(1 for ln in body.splitlines() if ln.strip())
    substantial = lines >= 3 or len(words(body)) >= 60  # a one-line rough request is neither
    return d == 0 and substantial and not _REQUEST_LIKE.search(body)


# -- the score --------------------------------------------------------------------------------------

@dataclass
class PromptScore:
    """total 0-100; blocks: points earned per block; penalties: points taken off; suggestions: what to add."""

    total: float
    blocks: dict[str, float]
    penalties: dict[str, float]
    suggestions: list[str]
    credit: dict[str, float] = field(default_factory=dict)  # 0, 0.5 or 1 per block
    why: dict[str, str] = field(default_factory=dict)  # the text that earned each block's credit
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def breakdown(self) -> list[dict]:
        """One row per block and penalty, for tables: part, points, max, why."""
        rows = [{"part": LABELS[k], "points": self.blocks[k], "max": WEIGHTS[k], "why": self.why.get(k, "")}
                for k in WEIGHTS]
        rows += [{"part": f"penalty: {k}", "points": -v, "max": 0, "why": self.details.get(f"{k}_why", "")}
                 for k, v in self.penalties.items() if v]
        return rows


def _snip(m: re.Match | None) -> str:
    if not m:
        return ""
    return " ".join(m.group(0).split())[:60]


def _credit(full: re.Pattern, half: re.Pattern, text: str) -> tuple[float, str]:
    m = full.search(text)
    if m:
        return 1.0, _snip(m)
    m = half.search(text)
    return (0.5, _snip(m)) if m else (0.0, "")


def _what(text: str) -> tuple[float, str]:
    m = _WHAT_LABEL.search(text)
    if m:
        return 1.0, _snip(m)
    best, why = 0.0, ""
    for m in _WHAT_LEAD.finditer(text):
        n = len(words(m.group(0)))
        c = 1.0 if n >= 5 else 0.5
        if c > best:
            best, why = c, _snip(m)
        if best == 1.0:
            break
    return best, why


def _how(text: str) -> tuple[float, str]:
    hits = [m for m in (p.search(text) for p in _HOW) if m]
    if not hits:
        return 0.0, ""
    return (1.0 if len(hits) >= 2 else 0.5), "; ".join(_snip(m) for m in hits[:2])


def _ramble(text: str) -> tuple[float, str]:
    n = len(words(text))
    long_pen = min(15.0, max(0, n - LONG_WORDS) / 20)
    lines = [ln.strip().lower() for ln in text.splitlines() if len(ln.strip()) > 10]
    dup_lines = (len(lines) - len(set(lines))) / len(lines) if lines else 0.0
    toks = [w.lower() for w in words(text)]
    grams = [tuple(toks[i:i + 6]) for i in range(len(toks) - 5)]
    dup_grams = (len(grams) - len(set(grams))) / len(grams) if grams else 0.0
    rep = max(dup_lines, dup_grams)
    rep_pen = min(15.0, 30 * rep)
    why = []
    if long_pen:
        why.append(f"{n} words (over {LONG_WORDS})")
    if rep_pen >= 0.5:
        why.append(f"{rep:.0%} repeated")
    return min(PENALTY_MAX["ramble"], long_pen + rep_pen), ", ".join(why)


def _vague(text: str) -> tuple[float, str, list[str]]:
    n = len(words(text))
    found = [m.group(0).lower() for m in VAGUE.finditer(text)]
    per100 = len(found) / max(n, 1) * 100
    word_pen = min(10.0, 2.5 * per100)
    short_pen = 10.0 * max(0, SHORT_WORDS - n) / SHORT_WORDS
    why = []
    if found:
        why.append("vague words: " + ", ".join(dict.fromkeys(found)))
    if short_pen:
        why.append(f"only {n} words")
    return min(PENALTY_MAX["vague"], word_pen + short_pen), "; ".join(why), list(dict.fromkeys(found))


SUGGEST = {
    "who": 'WHO: open with a role, e.g. "You are a senior data analyst who explains results to busy managers."',
    "what": 'WHAT: state the task and the deliverable in one sentence that starts with a verb, '
            'e.g. "Write a 150-word product description for [product] aimed at first-time buyers."',
    "use": "USE: give the material to work from: a \"Context:\" line, the input between <tags>, "
           "or [slots] for details the user must fill in.",
    "how": 'HOW: fix the shape of the output: format plus length, e.g. "Format: a table with columns X, Y, Z, '
           'then 3 bullet points, under 200 words."',
    "dont": 'DON\'T: say what to avoid, e.g. "Avoid jargon; do not invent facts or numbers."',
    "think": 'THINK: add steps or a self-check, e.g. "Before answering, check every claim against the facts above; '
             'if something is missing, ask me first."',
    "show": 'SHOW: add a short example of the output you want, e.g. "Example: <one sample line or entry>".',
    "audience": 'Audience / tone: say who reads it and how it should sound, e.g. "Tone: plain and friendly, '
                'for first-time customers."',
    "success": 'Success criteria: say what a good result achieves, e.g. "Success means a new reader can '
               'follow it without asking a question."',
}


def score_prompt(prompt: str, request: str | None = None) -> PromptScore:
    """Score a prompt 0-100 on PET's blocks, minus penalties (see the module docstring).

    `request` is the rough request the prompt was written for, when known: it enables the drift
    penalty (the prompt must keep the request's subject). Deterministic; no model is loaded."""
    text, _ = split_blocks_line(prompt or "")
    credit, why = {}, {}
    credit["who"], why["who"] = _credit(_WHO_FULL, _WHO_HALF, text)
    credit["what"], why["what"] = _what(text)
    credit["use"], why["use"] = _credit(_USE_FULL, _USE_HALF, text)
    credit["how"], why["how"] = _how(text)
    credit["dont"], why["dont"] = _credit(_DONT_FULL, _DONT_HALF, text)
    credit["think"], why["think"] = _credit(_THINK_FULL, _THINK_HALF, text)
    credit["show"], why["show"] = _credit(_SHOW_FULL, _SHOW_HALF, text)
    credit["audience"], why["audience"] = _credit(_AUD_FULL, _AUD_HALF, text)
    credit["success"], why["success"] = _credit(_SUCCESS_FULL, _SUCCESS_HALF, text)
    blocks = {k: WEIGHTS[k] * credit[k] for k in WEIGHTS}

    details: dict = {"words": len(words(text))}
    pen = {k: 0.0 for k in PENALTY_MAX}
    answering = is_answer_not_rewrite(request, text)
    if answering:
        pen["answering"] = PENALTY_MAX["answering"]
        details["answering_why"] = "reads as an answer to the request, not a prompt for a model"
    missing: list[str] = []
    if request and request.strip():
        cover, missing = subject_coverage(request, text)
        details["keeps_subject"] = round(cover, 4)
        pen["drift"] = round(PENALTY_MAX["drift"] * max(0.0, 0.6 - cover) / 0.6, 2)
        if pen["drift"]:
            details["drift_why"] = f"keeps {cover:.0%} of the request's subject; missing: {', '.join(missing[:8])}"
    pen["vague"], details["vague_why"], vague_found = _vague(text)
    pen["ramble"], details["ramble_why"] = _ramble(text)
    pen = {k: round(v, 2) for k, v in pen.items()}

    total = sum(blocks.values()) - sum(pen.values())
    total = round(min(100.0, max(0.0, total)), 1)

    tips = []
    if answering:
        tips.append("This reads as an answer, not a prompt: rewrite it as instructions to a model "
                    "(a role, the task, then how the answer should look).")
    for k in sorted(WEIGHTS, key=lambda k: -WEIGHTS[k] * (1 - credit[k])):
        if credit[k] < 1:
            tips.append(SUGGEST[k] + (" (only half credit so far)" if credit[k] == 0.5 else ""))
    if pen["drift"]:
        tips.append(f"Keep the request's subject: mention {', '.join(missing[:5])}.")
    if vague_found:
        tips.append(f"Replace vague words ({', '.join(vague_found[:5])}) with specifics: numbers, names, examples.")
    if details["words"] < SHORT_WORDS:
        tips.append(f"At {details['words']} words it is too short to be specific: add context and constraints.")
    if pen["ramble"]:
        tips.append(f"Tighten it ({details['ramble_why']}): cut repeats and keep it under {LONG_WORDS} words.")
    return PromptScore(total=total, blocks=blocks, penalties=pen, suggestions=tips, credit=credit, why=why,
                       details=details)


# -- calibration --------------------------------------------------------------------------------------

def auc(pos: list[float], neg: list[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half): the ROC AUC."""
    if not pos or not neg:
        raise ValueError("AUC needs at least one positive and one negative")
    wins = 0.0
    neg_sorted = sorted(neg)
    import bisect

    for p in pos:
        lo = bisect.bisect_left(neg_sorted, p)
        hi = bisect.bisect_right(neg_sorted, p)
        wins += lo + 0.5 * (hi - lo)
    return wins / (len(pos) * len(neg))


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def calibrate(examples: list[dict]) -> dict:
    """Score each example's rough request (alone) and its reference answer (with the request):
    the AUC of references over requests, both medians, and the share of references flagged as answers."""
    from pet.dataset import first_user

    req_scores, ref_scores, answering = [], [], 0
    for ex in examples:
        req = first_user(ex)
        ref = next((m["content"] for m in reversed(ex.get("messages", [])) if m.get("role") == "assistant"), "")
        if not req or not ref:
            continue
        req_scores.append(score_prompt(req).total)
        s = score_prompt(ref, req)
        ref_scores.append(s.total)
        answering += bool(s.penalties["answering"])
    if not ref_scores:
        raise ValueError("no example has both a request and a reference answer")
    return {"examples": len(ref_scores), "auc": round(auc(ref_scores, req_scores), 4),
            "median_reference": _median(ref_scores), "median_request": _median(req_scores),
            "min_reference": min(ref_scores), "max_request": max(req_scores),
            "references_flagged_answering": answering}
