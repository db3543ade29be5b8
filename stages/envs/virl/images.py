"""Pillow drawings of what a V-IRL agent sees: four views (front, right, back, left) side by side.

A style is a landmark set, a palette and a layout. Every landmark has its own icon (a shape in a
colour), so the image alone tells which landmark stands on which side. "id" is used for training and the
ID / OOD-rule evaluations. The visual-OOD options (generate.virl.ood_visual):

Training cities may be drawn in random scenes too (generate.virl.scene_variety, `random_scene`): random
background colours kept away from the dusk scene's, the day icons and edges, so that a model learns the
icons apart from one background and the dusk scene stays unseen.

- "ood_shift" (the default): the ID landmarks with their ID icons (shape and colour), drawn in another
  scene: dusk sky, ground, roads and buildings, smaller icons standing lower with a thick light
  outline. A model that reads the icons can still name every landmark, so its recognition measures
  reading under a visual shift.
- "ood_scene": the ID landmarks with their ID icons at their ID size and place, in the dusk scene: only
  the background changes, the mildest of the shifts.
- "ood_palette": the ID landmarks and shapes with the dusk palette, icon colours included: the shape
  still names a landmark's group of three, the colour no longer tells which of them.
- "ood": other landmarks with other shapes and the dusk palette. The model never saw these names, so
  it cannot state them: recognition there counts only the views with no landmark.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Palette:
    sky: RGB
    ground: RGB
    road: RGB
    building: RGB
    edge: RGB  # panel separators and icon outlines
    icons: tuple[RGB, RGB, RGB]  # one colour per group of four landmarks


@dataclass(frozen=True)
class Layout:
    icon_size: float  # icon diameter as a share of the smaller side of a panel
    icon_height: float  # icon centre, as a share of the image height from the top
    outline: int  # icon outline width in pixels


@dataclass(frozen=True)
class Style:
    landmarks: tuple[str, ...]  # single words, so the word-level embedded model sees one token each
    shapes: tuple[str, str, str, str]
    palette: Palette
    layout: Layout

    def icon(self, landmark: str) -> tuple[str, RGB]:
        """The (shape, colour) of a landmark: shapes cycle fastest, so no two landmarks share both."""
        index = self.landmarks.index(landmark)
        return self.shapes[index % 4], self.palette.icons[index // 4]


DAY = Palette(
    sky=(170, 205, 235),
    ground=(150, 170, 120),
    road=(90, 90, 95),
    building=(205, 185, 150),
    edge=(30, 30, 30),
    icons=((220, 40, 40), (40, 80, 220), (30, 160, 60)),
)
DUSK = Palette(
    sky=(70, 50, 110),
    ground=(110, 80, 60),
    road=(45, 40, 50),
    building=(120, 125, 150),
    edge=(240, 240, 240),
    icons=((245, 150, 20), (170, 60, 200), (20, 190, 190)),
)

# The dusk scene with the day icons: what "ood_shift" changes is everything but the icons' identity.
DUSK_SCENE = Palette(DUSK.sky, DUSK.ground, DUSK.road, DUSK.building, DUSK.edge, DAY.icons)
DAY_LAYOUT = Layout(icon_size=0.42, icon_height=0.45, outline=1)  # on the horizon
SHIFTED_LAYOUT = Layout(icon_size=0.36, icon_height=0.6, outline=2)  # smaller, on the ground, thick rim
REDRAWN_LAYOUT = Layout(icon_size=0.38, icon_height=0.45, outline=2)  # smaller, thick rim, in place

# Training scenes (generate.virl.scene_variety): each background colour at least this far (RGB distance)
# from the dusk scene's same part, so the visual-OOD scene stays unseen, and from every icon colour, so
# the icons stand out.
SCENE_MARGIN = 80.0


def random_scene(rng: random.Random) -> Palette:
    """A day-icon palette on a random background: sky, ground, road and building colours drawn uniformly,
    each away from dusk's and from the icons' (SCENE_MARGIN); the dark edges stay, as in every day view."""

    def colour(dusk: RGB) -> RGB:
        while True:
            drawn = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            if min(math.dist(drawn, avoid) for avoid in (dusk, *DAY.icons)) >= SCENE_MARGIN:
                return drawn

    sky, ground, road, building = (colour(part) for part in (DUSK.sky, DUSK.ground, DUSK.road, DUSK.building))
    return Palette(sky, ground, road, building, DAY.edge, DAY.icons)


ID_LANDMARKS = (
    "Bank", "Cafe", "School", "Hotel",
    "Library", "Bakery", "Museum", "Cinema",
    "Hospital", "Market", "Pharmacy", "Gym",
)  # fmt: skip
OOD_LANDMARKS = (
    "Temple", "Tower", "Stadium", "Gallery",
    "Harbor", "Theater", "Station", "Castle",
    "Fountain", "Arcade", "Chapel", "Garage",
)  # fmt: skip

ID_SHAPES = ("circle", "square", "triangle", "diamond")
STYLES = {
    "id": Style(ID_LANDMARKS, ID_SHAPES, DAY, DAY_LAYOUT),
    "ood_icons": Style(ID_LANDMARKS, ID_SHAPES, DAY, REDRAWN_LAYOUT),
    "ood_shift": Style(ID_LANDMARKS, ID_SHAPES, DUSK_SCENE, SHIFTED_LAYOUT),
    "ood_scene": Style(ID_LANDMARKS, ID_SHAPES, DUSK_SCENE, DAY_LAYOUT),
    "ood_palette": Style(ID_LANDMARKS, ID_SHAPES, DUSK, DAY_LAYOUT),
    "ood": Style(OOD_LANDMARKS, ("star", "cross", "hexagon", "ring"), DUSK, DAY_LAYOUT),
}


def render_views(
    views: Sequence[str | None],
    roads: Sequence[bool],
    style: str,
    width: int = 256,
    height: int = 64,
    scene: Palette | None = None,
) -> Image.Image:
    """Four panels (front, right, back, left): sky, ground, a road where a street leads that way,
    a building where none does, and the landmark's icon if one stands on that side. `scene` replaces
    the style's background colours (random_scene); the icons keep the style's."""
    if len(views) != 4 or len(roads) != 4:
        raise ValueError("views and roads need one entry per side: front, right, back, left")
    look = STYLES[style]
    palette, layout = scene or look.palette, look.layout
    image = Image.new("RGB", (width, height), palette.sky)
    draw = ImageDraw.Draw(image)
    horizon = round(height * 0.45)
    for side in range(4):
        left, right = side * width // 4, (side + 1) * width // 4
        middle = (left + right) / 2
        panel = right - left
        draw.rectangle((left, horizon, right - 1, height - 1), fill=palette.ground)
        if roads[side]:
            draw.polygon(
                [
                    (middle - panel * 0.35, height - 1),
                    (middle + panel * 0.35, height - 1),
                    (middle + panel * 0.06, horizon),
                    (middle - panel * 0.06, horizon),
                ],
                fill=palette.road,
            )
        else:
            draw.rectangle(
                (left + panel * 0.1, height * 0.2, right - 1 - panel * 0.1, height * 0.8),
                fill=palette.building,
            )
        if views[side] is not None:
            shape, colour = look.icon(views[side])
            size = min(panel, height) * layout.icon_size
            centre = height * layout.icon_height
            _draw_icon(draw, shape, colour, palette.edge, middle, centre, size, layout.outline)
        if side:
            draw.line((left, 0, left, height - 1), fill=palette.edge)
    return image


def _draw_icon(
    draw: ImageDraw.ImageDraw,
    shape: str,
    fill: RGB,
    edge: RGB,
    cx: float,
    cy: float,
    size: float,
    outline: int = 1,
):
    """One landmark icon of diameter `size` centred at (cx, cy), outlined `outline` pixels wide."""
    r = size / 2
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=edge, width=outline)
    elif shape == "square":
        draw.rectangle(box, fill=fill, outline=edge, width=outline)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(2, round(size / 5)))
    elif shape == "cross":
        t = r / 3
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
    else:
        draw.polygon(_polygon(shape, cx, cy, r), fill=fill, outline=edge, width=outline)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        corners, radii, turn = 3, (r,), -90
    elif shape == "diamond":
        corners, radii, turn = 4, (r,), -90
    elif shape == "hexagon":
        corners, radii, turn = 6, (r,), 0
    elif shape == "star":
        corners, radii, turn = 10, (r, r * 0.45), -90
    else:
        raise ValueError(f"unknown icon shape {shape!r}")
    points = []
    for k in range(corners):
        angle = math.radians(turn + 360 * k / corners)
        radius = radii[k % len(radii)]
        points.append((round(cx + radius * math.cos(angle), 2), round(cy + radius * math.sin(angle), 2)))
    return points
