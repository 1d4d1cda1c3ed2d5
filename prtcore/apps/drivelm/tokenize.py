"""What the COCO caption tools do to text before scoring, in pure Python.

The official pipeline (language_evaluation.CocoEvaluator → pycocoevalcap's PTBTokenizer) runs Stanford CoreNLP
3.4.1's PTBTokenizer in Java with -preserveLines -lowerCase, then drops the punctuation tokens
'' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ; and joins the rest with single spaces.

This stand-in follows the PTB rules that matter for DriveLM answers: lower case; a c-tag "<c1,CAM_FRONT,800.0,450.0>"
stays one token (PTBTokenizer 3.4.1 reads "<letter...>" as one SGML token); decimal numbers stay whole; clitics split
off ("don't" → "do n't", "ego's" → "ego 's"); hyphenated words and abbreviations such as "e.g." stay whole; every
other symbol is its own token; brackets and quotes count as punctuation and are dropped. Where Java's tokenizer
would differ (other SGML-like text, URLs, emoticons, currency, unusual Unicode, brackets written in lower case as
"-lrb-"), scores can differ slightly.
"""

from __future__ import annotations

import re

PUNCTUATION = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";", '"', "(", ")", "[", "]", "{", "}"}

TOKEN = re.compile(r"""
      <[/]?[A-Za-z!?][^>\r\n]*>             # SGML-like: a c-tag
    | \d+(?:[.,:]\d+)*(?!\w)                # numbers: 800.0, 1,000, 12:30 (not "3rd")
    | (?:[A-Za-z]\.){2,}                     # abbreviations: e.g. u.s.
    | [^\W\d_]+?(?=n't\b)                    # "do" of "don't"
    | n't\b
    | '(?:s|re|ve|ll|d|m)\b                  # clitics
    | \w+(?:-\w+)*                           # words, hyphenated words
    | \.\.\.|--|``|''
    | \S                                     # any other symbol
""", re.VERBOSE | re.IGNORECASE)


def ptb_tokenize(text: str) -> str:
    """`text` lower-cased, tokenised and without punctuation tokens, joined by single spaces."""
    tokens = TOKEN.findall(text.replace("\n", " "))
    return " ".join(t.lower() for t in tokens if t not in PUNCTUATION)
