"""The paper's case-study dialogue (Table 5, MELD test set): the one example used by the
web page, the HTTP API's OpenAPI example, the tests and the benchmarks.

``iein reproduce`` does not use it: it finds the dialogue in the real test data.
"""
from __future__ import annotations

TABLE5_EXAMPLE: tuple[tuple[str, str], ...] = (
    ("Chandler", "What are you doing tonight?"),
    ("Joey", "Huh? Uh."),
    ("Chandler", "Dude. Dude."),
    ("Joey", "Oh, Sorry. Uh, I’ve got those plans with Phoebe, why?"),
    ("Chandler", "Oh really? Uh, Monica said she had a date at 9:00."),
    ("Joey", "What? Tonight?"),
    ("Chandler", "That’s what Monica said."),
    ("Joey", "After she gave me that big speech?"),
    ("Joey", "She goes and makes a date on the same night she has plans with me?"),
    ("Joey", "I think she’s trying to pull a fast one on Big Daddy."),
)
