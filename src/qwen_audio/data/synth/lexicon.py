"""Per-language word lists the sentence templates draw from (plain data, written for this corpus).

Entries are concept-aligned across languages (index i of ``NOUNS`` is the same thing in every
language), so QA answers and number translations are exact. An entry ``"text|spoken"`` is written
as *text* in labels but given to espeak-ng as *spoken*: Chinese is spoken from tone-numbered pinyin
(Debian's espeak-ng lacks most hanzi) and the Japanese topic particle は is read "wa".
Nouns of de/es/fr/it carry their grammatical gender ("m", "f", "n") for articles and agreement.
"""

from __future__ import annotations

LANGUAGES: tuple[str, ...] = ("en", "zh", "de", "es", "ko", "fr", "ja", "it")

# English names of the concepts: the answers of the templated questions.
COLOUR_NAMES = ("red", "blue", "green", "yellow", "black", "white", "grey", "pink")
NOUN_NAMES = (
    "cat", "dog", "bird", "fish", "horse", "cow", "mouse", "rabbit",
    "car", "ball", "book", "hat", "cup", "box", "chair", "door", "bike", "flower", "apple", "shirt",
)
ANIMALS = frozenset(NOUN_NAMES[:8])

# Predicative colours; de/es/fr/it give (masculine, feminine) where they agree.
COLOURS: dict[str, tuple[str | tuple[str, str], ...]] = {
    "en": COLOUR_NAMES,
    "de": ("rot", "blau", "grün", "gelb", "schwarz", "weiß", "grau", "rosa"),
    "es": (("rojo", "roja"), "azul", "verde", ("amarillo", "amarilla"), ("negro", "negra"),
           ("blanco", "blanca"), "gris", "rosa"),
    "fr": ("rouge", ("bleu", "bleue"), ("vert", "verte"), "jaune", ("noir", "noire"),
           ("blanc", "blanche"), ("gris", "grise"), "rose"),
    "it": (("rosso", "rossa"), "blu", "verde", ("giallo", "gialla"), ("nero", "nera"),
           ("bianco", "bianca"), ("grigio", "grigia"), "rosa"),
    "zh": ("红色|hong2 se4", "蓝色|lan2 se4", "绿色|lv4 se4", "黄色|huang2 se4",
           "黑色|hei1 se4", "白色|bai2 se4", "灰色|hui1 se4", "粉色|fen3 se4"),
    "ja": ("あかい", "あおい", "みどり", "きいろい", "くろい", "しろい", "はいいろ", "ぴんく"),
    "ko": ("빨간색", "파란색", "초록색", "노란색", "검은색", "흰색", "회색", "분홍색"),
}

NOUNS: dict[str, tuple[str, ...]] = {
    "en": NOUN_NAMES,
    "de": ("Katze:f", "Hund:m", "Vogel:m", "Fisch:m", "Pferd:n", "Kuh:f", "Maus:f", "Hase:m",
           "Auto:n", "Ball:m", "Buch:n", "Hut:m", "Tasse:f", "Kiste:f", "Stuhl:m", "Tür:f",
           "Fahrrad:n", "Blume:f", "Apfel:m", "Hemd:n"),
    "es": ("gato:m", "perro:m", "pájaro:m", "pez:m", "caballo:m", "vaca:f", "ratón:m", "conejo:m",
           "coche:m", "pelota:f", "libro:m", "sombrero:m", "taza:f", "caja:f", "silla:f",
           "puerta:f", "bicicleta:f", "flor:f", "manzana:f", "camisa:f"),
    "fr": ("chat:m", "chien:m", "oiseau:m", "poisson:m", "cheval:m", "vache:f", "souris:f",
           "lapin:m", "voiture:f", "balle:f", "livre:m", "chapeau:m", "tasse:f", "boîte:f",
           "chaise:f", "porte:f", "vélo:m", "fleur:f", "pomme:f", "chemise:f"),
    "it": ("gatto:m", "cane:m", "uccello:m", "pesce:m", "cavallo:m", "mucca:f", "topo:m",
           "coniglio:m", "macchina:f", "palla:f", "libro:m", "cappello:m", "tazza:f",
           "scatola:f", "sedia:f", "porta:f", "bicicletta:f", "fiore:m", "mela:f", "camicia:f"),
    "zh": ("猫|mao1", "狗|gou3", "鸟|niao3", "鱼|yu2", "马|ma3", "牛|niu2", "老鼠|lao3 shu3",
           "兔子|tu4 zi5", "汽车|qi4 che1", "球|qiu2", "书|shu1", "帽子|mao4 zi5", "杯子|bei1 zi5",
           "盒子|he2 zi5", "椅子|yi3 zi5", "门|men2", "自行车|zi4 xing2 che1", "花|hua1",
           "苹果|ping2 guo3", "衬衫|chen4 shan1"),
    "ja": ("ねこ", "いぬ", "とり", "さかな", "うま", "うし", "ねずみ", "うさぎ", "くるま", "ぼーる",
           "ほん", "ぼうし", "かっぷ", "はこ", "いす", "どあ", "じてんしゃ", "はな", "りんご", "しゃつ"),
    "ko": ("고양이", "개", "새", "물고기", "말", "소", "쥐", "토끼", "자동차", "공", "책", "모자",
           "컵", "상자", "의자", "문", "자전거", "꽃", "사과", "셔츠"),
}

VERB_NAMES = ("sees", "buys", "finds", "takes", "wants", "has")
VERBS: dict[str, tuple[str, ...]] = {
    "en": VERB_NAMES,
    "de": ("sieht", "kauft", "findet", "nimmt", "mag", "hat"),
    "es": ("ve", "compra", "encuentra", "toma", "quiere", "tiene"),
    "fr": ("voit", "achète", "trouve", "prend", "veut", "a"),
    "it": ("vede", "compra", "trova", "prende", "vuole", "ha"),
    "zh": ("看见|kan4 jian4", "买|mai3", "找到|zhao3 dao4", "拿|na2", "想要|xiang3 yao4", "有|you3"),
    "ja": ("みる", "かう", "みつける", "とる", "もつ", "あらう"),
    "ko": ("본다", "산다", "찾는다", "잡는다", "가진다", "좋아한다"),
}

NAMES: dict[str, tuple[str, ...]] = {
    "en": ("anna", "tom", "lucy", "sam", "mia", "ben", "max", "emma", "jack", "lily", "oscar",
           "ruby"),
    "de": ("Anna", "Paul", "Lena", "Felix", "Marie", "Jonas", "Emil", "Clara"),
    "es": ("Ana", "Pablo", "Lucía", "Diego", "Sofía", "Carlos", "Elena", "Javier"),
    "fr": ("Marie", "Louis", "Claire", "Hugo", "Léa", "Paul", "Julie", "Antoine"),
    "it": ("Giulia", "Marco", "Sara", "Luca", "Chiara", "Matteo", "Paola", "Franco"),
    "zh": ("小明|xiao3 ming2", "小红|xiao3 hong2", "王芳|wang2 fang1", "李雷|li3 lei2",
           "张伟|zhang1 wei3", "刘洋|liu2 yang2"),
    "ja": ("たろう", "はなこ", "けんじ", "ゆき", "さくら", "ひろし"),
    "ko": ("민수", "지영", "철수", "영희", "현우", "수진"),
}

# NUMBERS[lang][n - 1] is the word for n, 1..20.
NUMBERS: dict[str, tuple[str, ...]] = {
    "en": ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
           "eighteen", "nineteen", "twenty"),
    "de": ("eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn",
           "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn",
           "neunzehn", "zwanzig"),
    "es": ("uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve", "diez",
           "once", "doce", "trece", "catorce", "quince", "dieciséis", "diecisiete", "dieciocho",
           "diecinueve", "veinte"),
    "fr": ("un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix", "onze",
           "douze", "treize", "quatorze", "quinze", "seize", "dix-sept", "dix-huit", "dix-neuf",
           "vingt"),
    "it": ("uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove", "dieci",
           "undici", "dodici", "tredici", "quattordici", "quindici", "sedici", "diciassette",
           "diciotto", "diciannove", "venti"),
    "zh": ("一|yi1", "二|er4", "三|san1", "四|si4", "五|wu3", "六|liu4", "七|qi1", "八|ba1",
           "九|jiu3", "十|shi2", "十一|shi2 yi1", "十二|shi2 er4", "十三|shi2 san1",
           "十四|shi2 si4", "十五|shi2 wu3", "十六|shi2 liu4", "十七|shi2 qi1", "十八|shi2 ba1",
           "十九|shi2 jiu3", "二十|er4 shi2"),
    "ja": ("いち", "に", "さん", "よん", "ご", "ろく", "なな", "はち", "きゅう", "じゅう",
           "じゅういち", "じゅうに", "じゅうさん", "じゅうよん", "じゅうご", "じゅうろく",
           "じゅうなな", "じゅうはち", "じゅうきゅう", "にじゅう"),
    "ko": ("일", "이", "삼", "사", "오", "육", "칠", "팔", "구", "십", "십일", "십이", "십삼",
           "십사", "십오", "십육", "십칠", "십팔", "십구", "이십"),
}

# Function words of the three clause frames (see sentences.py).
AND: dict[str, str] = {
    "en": "and", "de": "und", "es": "y", "fr": "et", "it": "e",
    "zh": "然后|ran2 hou4", "ja": "そして", "ko": "그리고",
}

# English-only richer frame ("tom found three red balls in the garden") so the English vocabulary
# (about 170 words) is large enough for ASR to be a real task.
EN_PLURALS = (
    "cats", "dogs", "birds", "fish", "horses", "cows", "mice", "rabbits", "cars", "balls",
    "books", "hats", "cups", "boxes", "chairs", "doors", "bikes", "flowers", "apples", "shirts",
)
EN_EXTRA_NOUNS = (
    ("key", "keys"), ("spoon", "spoons"), ("shoe", "shoes"), ("lamp", "lamps"),
    ("clock", "clocks"), ("pen", "pens"), ("bag", "bags"), ("plate", "plates"),
    ("stone", "stones"), ("leaf", "leaves"), ("coin", "coins"), ("bottle", "bottles"),
    ("window", "windows"), ("table", "tables"), ("kite", "kites"), ("boat", "boats"),
    ("train", "trains"), ("egg", "eggs"), ("cake", "cakes"), ("sock", "socks"),
)
EN_PAST_VERBS = (
    "saw", "bought", "found", "took", "wanted", "had", "painted", "washed", "sold", "carried",
    "dropped", "counted", "hid", "lost", "kept", "needed",
)
EN_SIZES = ("big", "small", "old", "new", "tiny", "huge", "clean", "dirty")
EN_PLACES = (
    "garden", "kitchen", "park", "school", "shop", "house", "street", "forest", "river",
    "office", "station", "market", "library", "beach", "field", "yard",
)
EN_PREPOSITIONS = ("in", "near", "behind", "under", "at")
EN_TIMES = ("today", "yesterday", "this morning", "last night", "on monday", "on friday",
            "this evening", "at noon")


def text_of(entry: str) -> str:
    """The written form of a lexicon entry."""
    return entry.split("|", 1)[0].split(":", 1)[0]


def spoken_of(entry: str) -> str:
    """The form espeak-ng should read."""
    base = entry.split(":", 1)[0]
    return base.split("|", 1)[1] if "|" in base else base


def gender_of(entry: str) -> str:
    """Grammatical gender of a de/es/fr/it noun entry ("m", "f" or "n")."""
    return entry.rsplit(":", 1)[1] if ":" in entry else "m"
