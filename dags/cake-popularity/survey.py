"""The synthetic cake survey: who answered, what they were offered, whether they liked it.

Each row is one student's answer about one cake. Whether they liked it follows a hidden
logistic rule (chocolate lovers like chocolate, sweet tooths like sweet cakes, price puts
people off) plus noise, so a model can learn it but not perfectly. Used by collect.py (the
training batch) and monitor.py (a fresh batch, optionally shifted, to measure drift).
"""

import numpy as np
import pandas as pd

FLAVOURS = ["chocolate", "vanilla", "red-velvet", "lemon", "black-forest"]
NUMERIC = {
    # column: (min, max) accepted by validation
    "age": (15, 35),
    "sweet_tooth": (1, 10),
    "chocolate_love": (1, 10),
    "price_inr": (40, 600),
    "portion_g": (50, 400),
}
CATEGORICAL = {"flavour": FLAVOURS}
TARGET = "liked"
COLUMNS = ["respondent_id", *NUMERIC, *CATEGORICAL, TARGET]
FEATURES = [*NUMERIC, *CATEGORICAL]

# Flavour appeal on the logit scale, and how much chocolate love adds to chocolatey cakes.
_APPEAL = {"chocolate": 0.6, "vanilla": 0.0, "red-velvet": 0.3, "lemon": -0.5,
           "black-forest": 0.2}
_CHOCOLATEY = {"chocolate": 1.0, "black-forest": 0.8, "red-velvet": 0.3}


def generate(rows, seed, shift=0.0):
    """`rows` answers drawn with `seed`; `shift` > 0 moves the population (older, pricier,
    less sweet-toothed, more lemon), which a drift monitor should notice."""
    rng = np.random.default_rng(seed)
    flavour_p = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    if shift:
        flavour_p = flavour_p * np.exp(np.array([-1, 0, 0, 2, 0]) * shift)
        flavour_p /= flavour_p.sum()
    age = np.clip(rng.normal(20 + 4 * shift, 2.5, rows).round(), 15, 35).astype(int)
    sweet = np.clip(rng.normal(6.0 - 1.5 * shift, 2.0, rows).round(), 1, 10).astype(int)
    choc = np.clip(rng.normal(6.5, 2.2, rows).round(), 1, 10).astype(int)
    price = np.clip(rng.lognormal(np.log(180) + 0.5 * shift, 0.35, rows).round(), 40, 600)
    portion = np.clip(rng.normal(150, 40, rows).round(), 50, 400).astype(int)
    flavour = rng.choice(FLAVOURS, size=rows, p=flavour_p)

    logit = 2.2 * (
        0.55 * (sweet - 5.5)
        + np.array([_CHOCOLATEY.get(f, -0.4) for f in flavour]) * 0.5 * (choc - 5.5)
        + np.array([_APPEAL[f] for f in flavour])
        - 0.012 * (price - 180)
        + 0.004 * (portion - 150)
        - 0.05 * (age - 20)
    )
    liked = rng.random(rows) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "respondent_id": np.arange(1, rows + 1),
            "age": age,
            "sweet_tooth": sweet,
            "chocolate_love": choc,
            "price_inr": price.astype(int),
            "portion_g": portion,
            "flavour": flavour,
            "liked": liked.astype(int),
        },
        columns=COLUMNS,
    )


def corrupt(df, seed):
    """A bad batch, as a broken upstream export makes one: out-of-range values, blanks, an
    unknown flavour, a duplicated id and a missing column."""
    rng = np.random.default_rng(seed + 1)
    bad = df.copy()
    n = len(bad)
    pick = lambda k: rng.choice(n, size=min(k, n), replace=False)  # noqa: E731
    bad["age"] = bad["age"].astype(float)
    bad.loc[pick(7), "age"] = -3
    bad.loc[pick(5), "sweet_tooth"] = 14
    bad["price_inr"] = bad["price_inr"].astype(float)
    bad.loc[pick(9), "price_inr"] = np.nan
    bad.loc[pick(4), "flavour"] = "durian"
    bad.loc[pick(3), "flavour"] = None
    if n > 2:
        bad.loc[n - 1, "respondent_id"] = bad.loc[0, "respondent_id"]
    return bad.drop(columns=["portion_g"])
