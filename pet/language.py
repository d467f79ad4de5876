"""Which language a request is written in, roughly: enough to say that a tier was tuned for others.

A count of each language's commonest short words, no model: a request is rarely long, and these seven
are the languages of the curated examples. It answers None when it cannot tell (code, a few words, a tie).
"""

from __future__ import annotations

import re

NAMES = {"en": "English", "es": "Spanish", "fr": "French", "de": "German", "pt": "Portuguese",
         "it": "Italian", "nl": "Dutch"}

# Words that are common in one language and rare in the others' requests (shared ones such as "de" and
# "la" count for each language that uses them; the margin below copes).
_COMMON = {
    "en": "the and you your for with that this what how my to is are of in it please can need write i me "
          "about a an be do have want help make our we from".split(),
    "es": "el la los las que de y en un una para por con mi mis es como qué necesito quiero sobre escribe "
          "del al se lo su sus hijo hija tengo ayúdame cómo más".split(),
    "fr": "le la les des que de et en un une pour par avec mon ma mes est comment je besoin veux sur écris "
          "du au il elle nous vous dans pas fils fille aide-moi qui ne plus rédige explique-moi".split(),
    "de": "der die das und ist ich ein eine für mit mein meine wie brauche möchte über schreib schreibe "
          "zu den dem nicht auf von sie wir sohn tochter hilf mir mich einem einen erkläre bitte".split(),
    "pt": "os que de e em um uma para por com meu minha é como preciso quero sobre escreva "
          "da na ao filho filha ajuda não você".split(),
    "it": "il lo la gli le che di e in un una per con mio mia è come ho bisogno voglio su scrivi "
          "del della al nel non sono figlio figlia aiutami".split(),
    "nl": "de het een en is ik voor met mijn hoe nodig wil over schrijf van op niet je we zoon dochter "
          "help maak".split(),
}
_SETS = {lang: frozenset(ws) for lang, ws in _COMMON.items()}
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)?")


def guess(text: str) -> str | None:
    """The request's language code (a key of NAMES), or None when the words do not say clearly."""
    words = _WORD.findall(text.lower())
    counts = {lang: sum(w in s for w in words) for lang, s in _SETS.items()}
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    (best, n1), (_, n2) = ranked[0], ranked[1]
    if n1 < 2 or n1 < 1.5 * n2 + 1:
        return None
    return best


def name(code: str) -> str:
    return NAMES.get(code, code)
