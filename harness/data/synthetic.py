"""A deterministic synthetic catalogue and purchase log with structure a recommender can learn.

Why synthetic: the embedded default must run offline on a CPU in minutes, yet reward a model that
learns sequences. The generator plants the signals real e-commerce logs carry, each at a known rate:
complementary items (a drill, then its bits), category and brand loyalty, a Zipf popularity skew and
repeat purchases. Timestamps are unix seconds in upstream's 2016-10 .. 2018-11 window.
"""

from __future__ import annotations

import numpy as np

from harness.data.protocol import sliding_windows, temporal_split
from harness.data.schema import Dataset, Interaction, Item
from harness.params import PlantParams, SyntheticParams
from harness.sid.tokens import codes_to_tokens

# category -> (product nouns, attributes, variants, use phrase)
CATALOGUE: dict[str, tuple[list[str], list[str], list[str], str]] = {
    "Lab Glassware": (["Beaker", "Erlenmeyer Flask", "Graduated Cylinder", "Volumetric Flask", "Test Tube Set",
                       "Petri Dish Pack", "Filtering Flask", "Glass Funnel"],
                      ["Borosilicate Glass", "Heavy Wall", "Autoclavable", "Low Form"],
                      ["50 mL", "100 mL", "250 mL", "500 mL", "1000 mL", "12-Pack"], "school and research labs"),
    "Lab Instruments": (["Digital Scale", "Magnetic Stirrer", "pH Meter", "Hot Plate", "Mini Centrifuge",
                         "Pipette Set", "Thermometer Probe"],
                        ["Precision", "Benchtop", "Calibrated", "Compact"],
                        ["0.01 g", "110V", "with Case", "Kit"], "accurate measurements at the bench"),
    "Power Tools": (["Cordless Drill", "Impact Driver", "Angle Grinder", "Jigsaw", "Rotary Tool", "Circular Saw",
                     "Heat Gun"],
                    ["18V", "20V Max", "12V", "Brushless"],
                    ["Kit", "Bare Tool", "with 2 Batteries", "with Charger"], "drilling, cutting and shaping"),
    "Drill Accessories": (["Drill Bit Set", "Driver Bit Set", "Hole Saw Kit", "Grinding Wheel", "Saw Blade",
                           "Sanding Discs"],
                          ["Titanium Coated", "Cobalt", "Carbide", "Impact Rated"],
                          ["29-Piece", "10-Pack", "4-1/2 Inch", "Assorted"], "power tool users"),
    "Fasteners": (["Wood Screws", "Hex Bolts", "Fender Washers", "Wall Anchors", "Pop Rivets", "Lock Nuts",
                   "Brad Nails"],
                  ["Stainless Steel", "Zinc-Plated", "Brass", "Black Oxide"],
                  ["#8 x 1-Inch", "1/4-20", "M6", "100-Pack", "Assortment Kit"], "assembly and repair"),
    "Adhesives": (["Epoxy", "Super Glue", "Silicone Sealant", "Thread Locker", "Construction Adhesive",
                   "Hot Glue Sticks"],
                  ["Quick Set", "Heavy Duty", "Waterproof", "Clear"],
                  ["1 oz", "10.1 oz", "4-Pack", "Syringe"], "bonding metal, wood and plastic"),
    "Safety Gear": (["Safety Glasses", "Nitrile Gloves", "Ear Muffs", "Respirator Mask", "Face Shield",
                     "Hi-Vis Vest"],
                    ["Anti-Fog", "Disposable", "ANSI Rated", "Reusable"],
                    ["Large", "Medium", "100-Count", "2-Pack"], "workshop and lab safety"),
    "Soldering": (["Soldering Iron", "Solder Wire", "Flux Paste", "Desoldering Pump", "Helping Hands",
                   "Soldering Station"],
                  ["Lead-Free", "Temperature Controlled", "Rosin Core", "60W"],
                  ["0.8 mm", "Kit", "50 g", "with Stand"], "electronics repair"),
    "Electrical": (["Wire Connectors", "Heat Shrink Tubing", "Electrical Tape", "Crimp Terminal Kit",
                    "Wire Stripper", "Multimeter"],
                   ["Insulated", "Waterproof", "Auto-Ranging", "Marine Grade"],
                   ["560-Piece", "22-10 AWG", "3/4 Inch", "Assortment"], "wiring projects"),
    "3D Printing": (["PLA Filament", "PETG Filament", "Build Plate", "Nozzle Set", "UV Resin", "Filament Dryer"],
                    ["1.75 mm", "High Speed", "Matte", "Dimensional Accuracy +/- 0.03 mm"],
                    ["1 kg", "Black", "White", "0.4 mm"], "FDM and resin printers"),
    "Janitorial": (["Trash Bags", "Paper Towels", "Disinfectant Wipes", "Mop Head", "Hand Soap", "Spray Bottle"],
                   ["Commercial", "Heavy Duty", "Unscented", "Refillable"],
                   ["33 Gallon", "12 Rolls", "Case of 6", "32 oz"], "facility cleaning"),
    "Welding": (["Welding Helmet", "Welding Gloves", "Flux Core Wire", "Welding Rods", "Magnetic Clamp",
                 "Chipping Hammer"],
                ["Auto-Darkening", "Leather", "E6013", "Heavy Duty"],
                ["0.030 Inch", "2 lb", "Large", "4-Pack"], "MIG and stick welding"),
}
# Complements cross these pairs (both directions).
RELATED = [("Lab Glassware", "Lab Instruments"), ("Power Tools", "Drill Accessories"),
           ("Drill Accessories", "Fasteners"), ("Fasteners", "Adhesives"), ("Soldering", "Electrical"),
           ("3D Printing", "Adhesives"), ("Welding", "Safety Gear"), ("Janitorial", "Safety Gear"),
           ("Lab Instruments", "Safety Gear"), ("Power Tools", "Safety Gear")]
# Distinguishing selling points; two per item keep near-twin products apart in text space.
FEATURES = ["ergonomic soft-grip handle", "RoHS compliant materials", "UL listed for professional use",
            "a reusable storage case", "corrosion-resistant finish", "laser-etched markings",
            "an LED status indicator", "a quick-release mechanism", "chemical-resistant coating",
            "a one-handed operation design", "made in the USA", "imported from Germany",
            "a lifetime replacement guarantee", "anti-slip rubber feet", "magnetic tip retention",
            "high-visibility orange color", "a compact travel size", "bulk contractor packaging",
            "a clear measurement scale", "fire-retardant construction", "an extended reach nozzle",
            "replaceable wear parts", "low-odor formula", "cold-weather performance",
            "a printed quick-start guide", "dust-proof sealing", "a 360-degree swivel joint",
            "color-coded sizing", "precision-ground edges", "recycled packaging"]
_BRAND_HEAD = ["Vant", "Kel", "Stan", "Dura", "Pro", "Lum", "Tek", "Ast", "Bor", "Cra", "Ever", "Flux",
               "Grit", "Hex", "Iron", "Jet"]
_BRAND_TAIL = ["ora", "brix", "ford", "max", "line", "tech", "co", "works", "well", "ix", "on", "sys"]

# Transition mix for the next purchase given the current one.
P_COMPLEMENT, P_REPEAT, P_SAME_CATEGORY = 0.50, 0.06, 0.24  # the rest: the user's favourite categories
POP_EXPONENT = 0.6  # Zipf exponent of item popularity
T_START, T_END = 1475280000, 1541030400  # 2016-10-01 .. 2018-11-01 (UTC)


def _brands(rng: np.random.Generator, n: int) -> list[str]:
    names = sorted({h + t for h in _BRAND_HEAD for t in _BRAND_TAIL})
    return [str(x) for x in rng.choice(names, size=n, replace=False)]


def _catalogue(rng: np.random.Generator, p: SyntheticParams) -> tuple[list[Item], np.ndarray, list[list[int]]]:
    cats = list(CATALOGUE)[: p.n_categories]
    brands = _brands(rng, p.n_brands)
    brand_cats = {b: set(rng.choice(cats, size=int(rng.integers(1, 4)), replace=False)) for b in brands}
    items: list[Item] = []
    seen_titles: set[str] = set()
    while len(items) < p.n_items:
        cat = cats[len(items) % len(cats)] if len(items) < len(cats) else str(rng.choice(cats))
        nouns, attrs, variants, use = CATALOGUE[cat]
        makers = [b for b in brands if cat in brand_cats[b]] or brands
        brand, noun = str(rng.choice(makers)), str(rng.choice(nouns))
        attr, variant = str(rng.choice(attrs)), str(rng.choice(variants))
        model = f"{brand[:2].upper()}{int(rng.integers(100, 9999))}"
        title = f"{brand} {model} {attr} {noun}, {variant}"
        if title in seen_titles:
            continue
        seen_titles.add(title)
        feats = rng.choice(FEATURES, size=2, replace=False)
        desc = (f"{attr} {noun.lower()} by {brand} for {use}, featuring {feats[0]} and {feats[1]}. "
                f"Size/pack: {variant}. Model {model}, backed by a {int(rng.integers(1, 4))}-year warranty.")
        items.append(Item(id=len(items), title=title, description=desc, brand=brand, category=cat))
    n = len(items)
    ranks = rng.permutation(n) + 1
    popularity = 1.0 / ranks**POP_EXPONENT
    popularity /= popularity.sum()
    related = {c: {c} for c in cats}
    for a, b in RELATED:
        if a in related and b in related:
            related[a].add(b)
            related[b].add(a)
    by_cat = {c: np.array([it.id for it in items if it.category == c]) for c in cats}
    complements: list[list[int]] = []
    for it in items:
        pool = np.concatenate([by_cat[c] for c in sorted(related[it.category])])
        pool = pool[pool != it.id]
        w = np.sqrt(popularity[pool])
        w /= w.sum()
        complements.append([int(x) for x in rng.choice(pool, size=min(3, len(pool)), replace=False, p=w)])
    return items, popularity, complements


def _pick(rng: np.random.Generator, pool: np.ndarray, weights: np.ndarray) -> int:
    w = weights[pool]
    return int(rng.choice(pool, p=w / w.sum()))


def generate(p: SyntheticParams, max_history: int, split: tuple[float, float, float]) -> Dataset:
    """Generate the catalogue, user sequences and the upstream-protocol samples, all from ``p.seed``."""
    rng = np.random.default_rng(p.seed)
    items, popularity, complements = _catalogue(rng, p)
    cats = sorted({it.category for it in items})
    item_cat = np.array([cats.index(it.category) for it in items])
    by_cat = [np.flatnonzero(item_cat == c) for c in range(len(cats))]
    brands = np.array([it.brand for it in items])
    samples = []
    mean_len = (p.min_interactions + p.max_interactions) / 3
    for u in range(p.n_users):
        user = f"U{u:05d}"
        n = int(min(p.max_interactions, p.min_interactions + rng.geometric(1 / max(1.0, mean_len - p.min_interactions + 1)) - 1))
        fav = [int(rng.integers(len(cats)))]
        if rng.random() < 0.5:
            fav.append(int(rng.integers(len(cats))))
        first = _pick(rng, by_cat[fav[0]], popularity)
        loved_brand = brands[first]
        brand_boost = np.where(brands == loved_brand, 3.0, 1.0) * popularity
        seq = [first]
        while len(seq) < n:
            cur, r = seq[-1], rng.random()
            repeat = False
            if r < P_COMPLEMENT:
                comp = complements[cur]
                nxt = comp[int(rng.choice(len(comp), p=np.array([0.6, 0.25, 0.15][: len(comp)]) / sum([0.6, 0.25, 0.15][: len(comp)])))]
            elif r < P_COMPLEMENT + P_REPEAT:
                nxt, repeat = int(rng.choice(seq)), True  # a re-order, possibly of the current item
            elif r < P_COMPLEMENT + P_REPEAT + P_SAME_CATEGORY:
                nxt = _pick(rng, by_cat[item_cat[cur]], brand_boost)
            else:
                nxt = _pick(rng, by_cat[int(rng.choice(fav))], brand_boost)
            if nxt != cur or repeat:
                seq.append(nxt)
        gaps = rng.exponential(12 * 86400, size=n).astype(np.int64) + 60
        span = int(gaps.sum())
        start = int(rng.integers(T_START, max(T_START + 1, T_END - span)))
        times = start + np.cumsum(gaps) - gaps[0]
        samples += sliding_windows(user, seq, times, max_history)
    rows = temporal_split(samples, split)
    index = shipped_index(items, p.plant.underused_level)
    plant_rng = np.random.default_rng([p.seed, 1])  # planting never changes the clean data drawn above
    rows, index = plant_defects(plant_rng, rows, index, len(items), p.plant)
    return Dataset(name="synthetic", items=items, interactions=rows, sid_index=index,
                   meta={"source": "synthetic", "seed": p.seed, "planted": p.plant.model_dump()})


def shipped_index(items: list[Item], underused_level: bool) -> dict[int, list[str]]:
    """The SIDs the synthetic source ships (like upstream's index.json): category / brand / rank in the pair.

    Unique by construction, and every level uses its codes densely, unless ``underused_level`` spreads the
    level-0 codes over a 256-code book (an under-used first level, as in upstream's shipped Industrial SIDs).
    """
    cats = sorted({it.category for it in items})
    brands = sorted({it.brand for it in items})
    seen: dict[tuple[int, int], int] = {}
    index = {}
    for it in items:
        c, b = cats.index(it.category), brands.index(it.brand)
        rank = seen.get((c, b), 0)
        seen[(c, b)] = rank + 1
        first = c * (256 // len(cats)) if underused_level else c
        index[it.id] = codes_to_tokens([first, b, rank])
    return index


def plant_defects(rng: np.random.Generator, rows: list[Interaction], index: dict[int, list[str]], n_items: int,
                  plant: PlantParams) -> tuple[list[Interaction], dict[int, list[str]]]:
    """Plant each requested defect class, so tests can show the audit finds it."""
    train = [r for r in rows if r.split == "train"]
    out = []
    last_train_ts = max(r.timestamp for r in train)
    for r in rows:
        if r.split == "test" and rng.random() < plant.cross_split_duplicates:
            src = train[int(rng.integers(len(train)))]
            r = Interaction(src.user, src.history, src.target, "test", r.timestamp)
        if r.split == "test" and rng.random() < plant.future_leakage:
            r = Interaction(r.user, r.history, r.target, r.split, int(rng.integers(train[0].timestamp, last_train_ts)))
        if rng.random() < plant.target_in_history:
            hist = list(r.history)
            hist[int(rng.integers(len(hist)))] = r.target
            r = Interaction(r.user, tuple(hist), r.target, r.split, r.timestamp)
        out.append(r)
        if r.split == "train" and rng.random() < plant.history_conflicts:
            other = int(rng.integers(n_items - 1))
            other += other >= r.target
            out.append(Interaction(r.user, r.history, other, r.split, r.timestamp))
    index = dict(index)
    ids = rng.permutation(n_items)
    for a, b in zip(ids[: plant.sid_collisions], ids[plant.sid_collisions : 2 * plant.sid_collisions]):
        index[int(b)] = list(index[int(a)])
    return out, index
