"""The topic vocabularies titles and abstracts are drawn from: the 15 MIND-like categories with
their shares, common words, subcategories and fictional entities, and the generic words every
topic shares."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    share: float
    common: tuple[str, ...]
    subcategories: dict[str, tuple[str, ...]]
    entities: tuple[tuple[str, str], ...]   # (surface form = label, type)


def _topic(name, share, common, subcategories, entities) -> Topic:
    return Topic(name, share, tuple(common.split()),
                 {sub: tuple(words.split()) for sub, words in subcategories.items()},
                 tuple(entities))


TOPICS = (
    _topic("news", 0.22,
           "officials police county state report court judge plan vote senator governor city "
           "residents lawmakers investigation charges federal rally protest mayor election "
           "campaign president congress hearing bill law school community shooting crash fire "
           "arrest suspect agency",
           {"newsus": "sheriff highway neighborhood township firefighters deputies",
            "newspolitics": "democrats republicans debate candidate ballot primary poll caucus",
            "newsworld": "embassy minister border refugees treaty diplomats parliament",
            "newscrime": "murder robbery trial verdict sentence prosecutors detectives"},
           [("Maple County", "G"), ("Ellen Price", "P"), ("Harbor City Council", "O"),
            ("José Ortega", "P")]),
    _topic("sports", 0.20,
           "game season coach team win loss score playoff fans roster injury trade rookie "
           "veteran championship league stadium victory defeat comeback streak lineup "
           "overtime rivalry standings",
           {"football_nfl": "quarterback touchdown receiver linebacker interception fumble "
                            "kickoff punt",
            "basketball_nba": "dunk rebound guard forward buzzer layup",
            "baseball_mlb": "pitcher inning homer bullpen batting shortstop",
            "soccer": "goal striker midfielder penalty keeper derby"},
           [("Riverton Hawks", "O"), ("Marcus Dell", "P"), ("Lakeview Comets", "O"),
            ("Björn Halvorsen", "P")]),
    _topic("finance", 0.07,
           "market stocks investors shares earnings profit revenue economy dollar bank rates "
           "inflation billion million growth forecast analysts retirement savings tax "
           "company layoffs merger wages",
           {"markets": "index rally selloff bond yields futures",
            "finance-real-estate": "mortgage housing homebuyers rent listing condo",
            "personalfinance": "budget credit debt paycheck pension résumé"},
           [("Northgate Capital", "O"), ("Pinecrest Bank", "O"), ("Dana Whitfield", "P")]),
    _topic("lifestyle", 0.08,
           "family wedding holiday style home fashion love couple gift décor garden tips trend "
           "celebration friendship photos neighbors makeover closet etiquette hobby",
           {"lifestyleroyals": "royal prince princess duchess palace queen",
            "lifestylebuzz": "viral surprise heartwarming stranger proposal",
            "lifestyleparenting": "toddler parenting teen newborn bedtime"},
           [("Prince Edmund", "P"), ("Duchess Clara", "P"), ("Willow Lane", "G")]),
    _topic("health", 0.05,
           "doctors health patients study disease hospital cancer heart sleep weight diet "
           "exercise symptoms treatment vaccine flu brain risk researchers therapy "
           "blood pressure aging immune",
           {"wellness": "yoga stress meditation fitness workout",
            "nutrition": "protein vitamins sugar fiber calories",
            "medical": "surgery diagnosis clinic infection"},
           [("Brightwater Clinic", "O"), ("Renée Marchand", "P"), ("Summit Health", "O")]),
    _topic("foodanddrink", 0.05,
           "recipe dinner cheese chicken bread dessert chef kitchen flavor sauce baking pie "
           "turkey soup pasta breakfast pumpkin chocolate menu cookies garlic butter",
           {"recipes": "casserole roast skillet crispy oven jalapeño",
            "restaurants": "diner bistro café brunch burger",
            "drinks": "wine coffee cocktail beer rosé"},
           [("Zoë Lindqvist", "P"), ("Café Lumière", "O"), ("Copper Pot", "O")]),
    _topic("travel", 0.05,
           "travel vacation hotel flight airport beach island destination resort cruise trip "
           "tourists passport luggage museum mountain airline tour adventure cabin lodge",
           {"traveltrip": "itinerary hiking road scenic getaway",
            "travelnews": "delays passengers security booking"},
           [("Isla Serena", "G"), ("Skyline Air", "O"), ("Mount Ardent", "G")]),
    _topic("autos", 0.05,
           "car truck engine driver vehicle sedan horsepower dealership recall model speed "
           "mileage brakes pickup fuel transmission wheels coupe garage",
           {"autosnews": "automaker production sales unveiled",
            "autosreview": "interior handling steering trim",
            "autoselectric": "electric battery charging hybrid"},
           [("Vantor Motors", "O"), ("Kestrel", "O"), ("Ridgeway Auto", "O")]),
    _topic("weather", 0.03,
           "storm snow rain temperatures forecast cold wind winter freeze weather flooding ice "
           "tornado hurricane chill frost warning heat clouds sleet",
           {"weathertopstories": "blizzard outage damage evacuations",
            "weatherforecast": "meteorologists radar showers degrees"},
           [("Great Plains", "G"), ("Lake Corvin", "G")]),
    _topic("entertainment", 0.04,
           "star celebrity actor actress fans premiere carpet award gala interview Hollywood "
           "rumors romance divorce spotted outfit glamorous",
           {"celebrity": "paparazzi engaged split reunion fiancé",
            "entertainment-awards": "nominations winners ceremony trophy"},
           [("Ava Sinclair", "P"), ("Golden Lantern Awards", "O")]),
    _topic("music", 0.03,
           "album song singer band concert tour rapper guitar lyrics chart single stage "
           "festival playlist vinyl track debut duet anthem",
           {"musicnews": "announced tickets lineup",
            "musicreviews": "ballad chorus melody"},
           [("The Velvet Owls", "O"), ("Lila Moreau", "P"), ("Sigrún Dahl", "P")]),
    _topic("movies", 0.03,
           "film movie director trailer sequel box office screenplay franchise theaters "
           "studio blockbuster horror comedy villain superhero",
           {"movienews": "casting release remake",
            "movies-reviews": "performance plot cinematography pacing critics"},
           [("Nightfall Protocol", "C"), ("Oliver Crane", "P"), ("Starline Studios", "O")]),
    _topic("tv", 0.04,
           "series episode finale network sitcom streaming host contestant reality viewers "
           "ratings spinoff channel binge",
           {"tvnews": "renewed canceled reboot showrunner",
            "tv-recaps": "twist cliffhanger recap elimination",
            "tv-celebrity": "judge anchor hosting"},
           [("Cedar Falls", "C"), ("Kitchen Rivals", "C"), ("Nora Quinlan", "P")]),
    _topic("video", 0.04,
           "watch video footage clip camera caught moment dramatic rescue incredible dog cat "
           "bear wild filmed drone",
           {"viral": "hilarious prank dance challenge",
            "animals": "puppy kitten wildlife zoo owl",
            "news-video": "bodycam dashcam eyewitness"},
           [("Pine Ridge Zoo", "O"), ("Oak Hollow", "G")]),
    _topic("kids", 0.02,
           "kids children science fun learning classroom teacher puzzle games toys cartoon "
           "students art craft story reading homework",
           {"kidsnews": "spelling contest inventor",
            "kids-activities": "coloring origami slime experiment"},
           [("Junior Science League", "O"), ("Captain Comet", "C")]),
)

GENERIC_WORDS = tuple((
    "new first after says could best year week day time people big top more over back just "
    "how why what still major ever amid latest next former two three most here this these "
    "your about before during against finally really again now today only every ahead "
    "biggest worst surprising simple secret real local national report shows reveals "
    "update warns says why").split())
