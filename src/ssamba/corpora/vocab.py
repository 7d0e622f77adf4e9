"""Word lists, sentence grammar, espeak-ng voices and General MIDI instrument families.

Everything here is a constant: the randomness of the suite lives in :mod:`ssamba.corpora.plan`.
"""

from __future__ import annotations

import numpy as np

#: The 35 words of Speech Commands v2, in its (alphabetical) order.
KWS_WORDS: tuple[str, ...] = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
    "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on",
    "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual",
    "wow", "yes", "zero",
)

#: Words the speaker-identification clips are made of (none of them a keyword): each
#: speaker's words are split into train / validation / test words, so a speaker is
#: tested on words it never said in training.
SPEAKER_WORDS: tuple[str, ...] = (
    "apple", "water", "table", "window", "garden", "yellow", "purple", "orange", "silver",
    "golden", "morning", "evening", "winter", "summer", "autumn", "river", "mountain",
    "ocean", "island", "forest", "desert", "valley", "village", "city", "market", "school",
    "doctor", "teacher", "farmer", "pilot", "sailor", "music", "paper", "pencil", "letter",
    "number", "question", "answer", "story", "picture", "mirror", "candle", "blanket",
    "pillow", "kitchen", "bottle", "basket", "button", "camera", "coffee", "dinner", "lunch",
    "breakfast", "bread", "butter", "cheese", "honey", "sugar", "pepper", "salad", "tomato",
    "potato", "carrot", "lemon", "cherry", "banana", "melon", "rabbit", "turtle", "monkey",
    "tiger", "lion", "zebra", "horse", "sheep", "goat", "chicken", "duck", "eagle", "spider",
    "dragon", "castle", "bridge", "tower", "rocket", "planet", "comet", "thunder",
    "lightning", "rainbow", "shadow", "sunset", "circle", "square", "triangle", "engine",
    "wheel", "ticket", "station", "airport", "harbor", "museum", "library", "hospital",
    "office", "bakery", "jacket", "sweater", "pocket", "wallet", "ladder", "hammer",
    "needle", "thread", "ribbon", "feather", "pebble", "crystal", "diamond", "marble",
    "velvet", "cotton", "timber", "copper", "silence", "whisper", "giant",
    "pirate", "wizard", "knight", "princess", "puzzle", "riddle", "signal", "compass",
)

# Sentence grammar for the unlabeled pool: keywords in context, with other words.
_SUBJECTS = (
    "marvin", "sheila", "the dog", "a cat", "the bird", "my friend", "the teacher", "we",
    "they", "you", "the old man", "her brother", "the children", "our neighbour",
)
_MODALS = ("will", "can", "should", "must", "might", "did not", "wants to", "tried to", "")
_VERBS = (
    "go", "follow", "learn", "stop", "see", "find", "like", "open", "move", "turn", "carry",
    "paint", "visit", "watch", "call", "build", "clean", "count",
)
_OBJECTS = (
    "the house", "the tree", "a bed", "the dog", "the cat", "the bird", "the river", "the door",
    "a letter", "the car", "the boat", "the garden", "the lights", "the radio", "the map",
    "the window", "a small box", "the green ball", "the red book",
)
_ADVERBS = (
    "up", "down", "left", "right", "forward", "backward", "on", "off", "now", "today",
    "again", "slowly", "quickly", "at once", "tomorrow", "", "", "",
)
_NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_OPENERS = ("yes", "no", "wow", "well", "okay", "so", "", "", "", "", "")


def make_sentence(rng: np.random.Generator) -> str:
    """One short sentence from the grammar (4-10 words), e.g. ``"yes marvin will follow the dog left"``."""

    def pick(options):
        return options[int(rng.integers(len(options)))]

    words = [pick(_OPENERS), pick(_SUBJECTS), pick(_MODALS), pick(_VERBS), pick(_OBJECTS), pick(_ADVERBS)]
    if rng.random() < 0.35:
        words += ["at", pick(_NUMBERS)]
    elif rng.random() < 0.2:
        words += ["with", pick(_NUMBERS), pick(("dogs", "cats", "birds", "trees", "houses"))]
    return " ".join(w for w in words if w)


#: espeak-ng English accents (voice files under ``espeak-ng-data/lang/gmw``).
ACCENTS: tuple[str, ...] = (
    "en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd", "en-us-nyc",
)

#: espeak-ng voice variants (``espeak-ng-data/voices/!v``) shipped by espeakng-loader 0.2.x,
#: all checked to speak English. ("Mr serious" is left out: its name has a space.)
VARIANTS: tuple[str, ...] = (
    "Alex", "Alicia", "Andrea", "Andy", "Annie", "AnxiousAndy", "Demonic", "Denis", "Diogo",
    "Gene", "Gene2", "Henrique", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Mike",
    "Nguyen", "Reed", "RicishayMax", "RicishayMax2", "RicishayMax3", "Storm", "Tweaky",
    "UniRobot", "adam", "anika", "anikaRobot", "announcer", "antonio", "aunty", "belinda",
    "benjamin", "boris", "caleb", "croak", "david", "ed", "edward", "edward2", "f1", "f2",
    "f3", "f4", "f5", "fast", "grandma", "grandpa", "gustave", "ian", "iven", "iven2",
    "iven3", "iven4", "john", "kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5",
    "klatt6", "linda", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "marcelo", "max",
    "michel", "miguel", "mike2", "norbert", "pablo", "paul", "pedro", "quincy", "rob",
    "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6",
    "robosoft7", "robosoft8", "sandro", "shelby", "steph", "steph2", "steph3", "travis",
    "victor", "whisper", "whisperf", "zac",
)

#: General MIDI instrument families: name -> (programs 0-based, MIDI key range for notes).
#: Families whose programs all render (non-silently) with FluidR3Mono over the key range.
GM_FAMILIES: dict[str, tuple[tuple[int, ...], tuple[int, int]]] = {
    "piano": (tuple(range(0, 8)), (36, 84)),
    "chromatic_percussion": (tuple(range(8, 16)), (60, 90)),
    "organ": (tuple(range(16, 24)), (40, 80)),
    "guitar": (tuple(range(24, 32)), (40, 76)),
    "bass": (tuple(range(32, 40)), (28, 52)),
    "strings": (tuple(range(40, 48)), (45, 76)),
    "ensemble": (tuple(range(48, 56)), (48, 79)),
    "brass": (tuple(range(56, 64)), (45, 72)),
    "reed": (tuple(range(64, 72)), (50, 79)),
    "pipe": (tuple(range(72, 80)), (60, 88)),
    "synth_lead": ((80, 81, 82, 83, 84, 85, 87), (48, 79)),  # 86 renders nearly silent
    "synth_pad": (tuple(range(88, 96)), (48, 76)),
    "ethnic": (tuple(range(104, 112)), (50, 79)),
}

#: Families of the ``sounds`` task (the others feed only the unlabeled pool).
SOUND_FAMILIES: tuple[str, ...] = (
    "piano", "chromatic_percussion", "organ", "guitar", "bass", "strings", "brass", "reed",
)

#: Scales for note phrases (semitones above the root).
SCALES = ((0, 2, 4, 5, 7, 9, 11, 12), (0, 2, 3, 5, 7, 8, 10, 12), (0, 2, 4, 7, 9, 12), (0, 3, 5, 7, 10, 12))
