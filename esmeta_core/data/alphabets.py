"""The 50 Omniglot alphabets: folder name, first file id and character count.

File ids are the 4-digit prefixes of the original PNG names (``0108_01.png``):
ids 1-964 are the 30 *background* alphabets, 965-1623 the 20 *evaluation*
alphabets. Character ``NN`` of an alphabet has id ``first_id + NN - 1``.
"""

from __future__ import annotations

# (folder name in the original archives, first file id, number of characters)
BACKGROUND_ALPHABETS: tuple[tuple[str, int, int], ...] = (
    ("Arcadian", 1, 26),
    ("Armenian", 27, 41),
    ("Asomtavruli_(Georgian)", 68, 40),
    ("Balinese", 108, 24),
    ("Bengali", 132, 46),
    ("Blackfoot_(Canadian_Aboriginal_Syllabics)", 178, 14),
    ("Braille", 192, 26),
    ("Cyrillic", 218, 33),
    ("Early_Aramaic", 251, 22),
    ("Syriac_(Estrangelo)", 273, 23),
    ("Anglo-Saxon_Futhorc", 296, 29),
    ("Futurama", 325, 26),
    ("Grantha", 351, 43),
    ("Greek", 394, 24),
    ("Gujarati", 418, 48),
    ("Hebrew", 466, 22),
    ("Japanese_(hiragana)", 488, 52),
    ("Inuktitut_(Canadian_Aboriginal_Syllabics)", 540, 16),
    ("Malay_(Jawi_-_Arabic)", 556, 40),
    ("Japanese_(katakana)", 596, 47),
    ("Korean", 643, 40),
    ("Latin", 683, 26),
    ("Alphabet_of_the_Magi", 709, 20),
    ("Mkhedruli_(Georgian)", 729, 41),
    ("Burmese_(Myanmar)", 770, 34),
    ("N_Ko", 804, 33),
    ("Ojibwe_(Canadian_Aboriginal_Syllabics)", 837, 14),
    ("Sanskrit", 851, 42),
    ("Tagalog", 893, 17),
    ("Tifinagh", 910, 55),
)

EVALUATION_ALPHABETS: tuple[tuple[str, int, int], ...] = (
    ("Angelic", 965, 20),
    ("Atemayar_Qelisayer", 985, 26),
    ("Atlantean", 1011, 26),
    ("Aurek-Besh", 1037, 26),
    ("Avesta", 1063, 26),
    ("Ge_ez", 1089, 26),
    ("Glagolitic", 1115, 45),
    ("Gurmukhi", 1160, 45),
    ("Kannada", 1205, 41),
    ("Keble", 1246, 26),
    ("Malayalam", 1272, 47),
    ("Manipuri", 1319, 40),
    ("Mongolian", 1359, 30),
    ("Old_Church_Slavonic_(Cyrillic)", 1389, 45),
    ("Oriya", 1434, 46),
    ("Syriac_(Serto)", 1480, 23),
    ("Sylheti", 1503, 28),
    ("Tengwar", 1531, 25),
    ("Tibetan", 1556, 42),
    ("ULOG", 1598, 26),
)

ALPHABETS = BACKGROUND_ALPHABETS + EVALUATION_ALPHABETS
NUM_CHARACTERS = 1623
NUM_BACKGROUND = 964
FIRST_ID = {name: first for name, first, _ in ALPHABETS}
COUNT = {name: count for name, _, count in ALPHABETS}


def alphabet_of(file_id: int) -> str:
    """Returns the alphabet folder name of an Omniglot file id (1..1623)."""
    for name, first, count in ALPHABETS:
        if first <= file_id < first + count:
            return name
    raise ValueError(f"Omniglot file ids run from 1 to {NUM_CHARACTERS}, got {file_id}.")


def file_id(alphabet: str, character: int) -> int:
    """Returns the file id of ``<alphabet>/character<NN>`` (NN counts from 1)."""
    if alphabet not in FIRST_ID:
        raise ValueError(f"Unknown Omniglot alphabet {alphabet!r}.")
    count = COUNT[alphabet]
    if not 1 <= character <= count:
        # Without this check character 99 of one alphabet would silently name another's.
        raise ValueError(f"{alphabet} has characters 1 to {count}, got {character}.")
    return FIRST_ID[alphabet] + character - 1
