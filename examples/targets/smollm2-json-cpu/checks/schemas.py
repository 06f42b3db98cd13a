"""The workload's JSON schemas, each with the prompt that asks for a matching object.

Written here rather than downloaded: realistic shapes in the manner of JSONSchemaBench (nested objects,
arrays with bounds, enums, bounded numbers, string formats and patterns, optional fields), kept small
enough that a 135M model on two cores answers each in seconds. ``make_requests.py`` turns them into
``requests.jsonl``.
"""

from __future__ import annotations

INT, BOOL = {"type": "integer"}, {"type": "boolean"}


def obj(props: dict, required: list[str] | None = None) -> dict:
    """An object with no further properties; every property required unless ``required`` says which."""
    return {"type": "object", "properties": props, "required": list(props) if required is None else required,
            "additionalProperties": False}


def enum(*values: str) -> dict:
    return {"type": "string", "enum": list(values)}


def bounded(kind: str, lo: float, hi: float) -> dict:
    return {"type": kind, "minimum": lo, "maximum": hi}


def text(n: int) -> dict:
    return {"type": "string", "minLength": 1, "maxLength": n}


def items(schema: dict, lo: int, hi: int) -> dict:
    return {"type": "array", "items": schema, "minItems": lo, "maxItems": hi}


SCHEMAS: list[tuple[str, str, dict]] = [
    ("person", "Give a JSON object for a person named Alice who is 30 years old.",
     obj({"name": text(20), "age": bounded("integer", 0, 130)})),
    ("book", "Describe the book 'Dune' by Frank Herbert as JSON.",
     obj({"title": text(40), "author": text(40), "year": bounded("integer", 1400, 2030)})),
    ("weather", "Report today's weather in Paris as JSON: sunny, 21 degrees.",
     obj({"city": text(30), "condition": enum("sunny", "cloudy", "rain", "snow"),
          "temperature_c": bounded("number", -60, 60)})),
    ("todo", "Make a to-do item to buy milk, not done yet, as JSON.",
     obj({"task": text(40), "done": BOOL, "priority": bounded("integer", 1, 5)})),
    ("product", "Give JSON for a product: a red mug that costs 8.5 dollars and is in stock.",
     obj({"name": text(30), "color": enum("red", "green", "blue", "black", "white"),
          "price": bounded("number", 0, 10000), "in_stock": BOOL})),
    ("address", "Write the address 10 Downing Street, London, SW1A 2AA, UK as JSON.",
     obj({"street": text(40), "city": text(30), "postcode": text(10), "country": text(30)})),
    ("user-email", "Create a JSON user record for bob with the email bob@example.com.",
     obj({"username": {"type": "string", "pattern": "^[a-z][a-z0-9_]{1,15}$"},
          "email": {"type": "string", "format": "email"}})),
    ("event-date", "A JSON event: the team meeting on 2024-05-17.",
     obj({"title": text(40), "date": {"type": "string", "format": "date"}})),
    ("rgb", "The color orange as a JSON object with red, green and blue values.",
     obj({"r": bounded("integer", 0, 255), "g": bounded("integer", 0, 255), "b": bounded("integer", 0, 255)})),
    ("point", "The point x=3, y=-2 as JSON.", obj({"x": INT, "y": INT})),
    ("movie-rating", "Rate the movie 'Up' as JSON, with a score from 1 to 10.",
     obj({"movie": text(40), "score": bounded("integer", 1, 10), "recommend": BOOL})),
    ("tags", "Give three tags for a blog post about baking bread, as JSON.",
     obj({"post": text(40), "tags": items(text(15), 1, 3)})),
    ("shopping", "A JSON shopping list with eggs and flour.",
     obj({"items": items(obj({"name": text(20), "quantity": bounded("integer", 1, 99)}), 1, 4)})),
    ("country", "Describe Japan as JSON: capital and continent.",
     obj({"country": text(30), "capital": text(30),
          "continent": enum("Africa", "Asia", "Europe", "North America", "South America", "Oceania")})),
    ("http-log", "A JSON log entry: GET /index.html returned status 200.",
     obj({"method": enum("GET", "POST", "PUT", "DELETE"), "path": text(40), "status": bounded("integer", 100, 599)})),
    ("server", "Describe a web server at IP 192.168.1.10 on port 8080 as JSON.",
     obj({"host": {"type": "string", "format": "ipv4"}, "port": bounded("integer", 1, 65535), "tls": BOOL})),
    ("recipe", "A JSON recipe for tea: ingredients and minutes.",
     obj({"dish": text(30), "ingredients": items(text(20), 1, 4), "minutes": bounded("integer", 1, 600)})),
    ("student", "A JSON record of a student, Maria, in grade 7 with a GPA of 3.8.",
     obj({"name": text(30), "grade": bounded("integer", 1, 12), "gpa": bounded("number", 0, 4)})),
    ("optional-phone", "A JSON contact for Sam; add a phone number only if you know it.",
     obj({"name": text(30), "phone": {"type": "string", "pattern": "^[0-9 +-]{7,15}$"}}, required=["name"])),
    ("flight", "A JSON flight: AF123 from CDG to JFK, on time.",
     obj({"flight": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2,4}$"},
          "from": {"type": "string", "pattern": "^[A-Z]{3}$"}, "to": {"type": "string", "pattern": "^[A-Z]{3}$"},
          "status": enum("on time", "delayed", "cancelled")})),
    ("nested-company", "A JSON company, Acme, with its CEO's name and age.",
     obj({"company": text(30), "ceo": obj({"name": text(30), "age": bounded("integer", 18, 100)})})),
    ("order", "A JSON order: order 42 for two pens, paid.",
     obj({"order_id": bounded("integer", 1, 10**6), "lines": items(obj({"item": text(20), "qty": bounded("integer", 1, 50)}), 1, 3),
          "paid": BOOL})),
    ("review", "A JSON review of a hotel: 4 stars, clean rooms.",
     obj({"stars": bounded("integer", 1, 5), "summary": text(60), "would_return": BOOL})),
    ("timezone", "A JSON object for a meeting at 14:30 in the Europe/Berlin time zone.",
     obj({"time": {"type": "string", "pattern": "^[0-2][0-9]:[0-5][0-9]$"}, "timezone": text(30)})),
    ("pet", "A JSON pet: a dog named Rex, 5 years old, vaccinated.",
     obj({"name": text(20), "species": enum("dog", "cat", "bird", "fish"), "age": bounded("integer", 0, 40),
          "vaccinated": BOOL})),
    ("matrix", "A 2x2 identity matrix as JSON.",
     obj({"rows": items(items(INT, 2, 2), 2, 2)})),
    ("config", "A JSON config with debug off, 4 workers and log level info.",
     obj({"debug": BOOL, "workers": bounded("integer", 1, 64), "log_level": enum("debug", "info", "warning", "error")})),
    ("geo", "The location of the Eiffel Tower as JSON latitude and longitude.",
     obj({"name": text(40), "lat": bounded("number", -90, 90), "lon": bounded("number", -180, 180)})),
    ("song", "A JSON song: 'Imagine' by John Lennon, 183 seconds long.",
     obj({"title": text(40), "artist": text(40), "seconds": bounded("integer", 1, 3600)})),
    ("invoice", "A JSON invoice numbered INV-0007 for 120.50 euros, due 2024-07-01.",
     obj({"number": {"type": "string", "pattern": "^INV-[0-9]{4}$"}, "amount": bounded("number", 0, 10**6),
          "currency": enum("EUR", "USD", "GBP"), "due": {"type": "string", "format": "date"}})),
    ("team", "A JSON team of two people, Ann and Ben, with their roles.",
     obj({"team": text(30), "members": items(obj({"name": text(20), "role": enum("lead", "dev", "qa", "design")}), 1, 3)})),
    ("sensor", "A JSON sensor reading: humidity 45 percent at 2024-03-01T12:00:00Z.",
     obj({"sensor": text(20), "humidity": bounded("number", 0, 100), "at": {"type": "string", "format": "date-time"}})),
    ("vehicle", "A JSON car: a blue 2019 Toyota Corolla.",
     obj({"make": text(20), "model": text(20), "year": bounded("integer", 1900, 2030),
          "color": enum("red", "blue", "black", "white", "silver")})),
    ("optional-nickname", "A JSON profile for Robert; include a nickname if he has one.",
     obj({"name": text(30), "nickname": text(20), "verified": BOOL}, required=["name", "verified"])),
    ("quiz", "A JSON quiz question about the largest planet, with its answer.",
     obj({"question": text(60), "choices": items(text(20), 2, 4), "answer": text(20)})),
    ("library-loan", "A JSON library loan of book id 981 to member 55, not returned.",
     obj({"book_id": bounded("integer", 1, 10**6), "member_id": bounded("integer", 1, 10**6), "returned": BOOL})),
    ("uuid-record", "A JSON record with a UUID id and the label 'alpha'.",
     obj({"id": {"type": "string", "format": "uuid"}, "label": text(20)})),
    ("stock", "A JSON stock quote: ticker ACME at 12.25, up.",
     obj({"ticker": {"type": "string", "pattern": "^[A-Z]{1,5}$"}, "price": bounded("number", 0, 10**5),
          "trend": enum("up", "down", "flat")})),
    ("workout", "A JSON workout: running for 30 minutes, 300 calories.",
     obj({"activity": enum("running", "cycling", "swimming", "walking"), "minutes": bounded("integer", 1, 600),
          "calories": bounded("integer", 0, 5000)})),
    ("website", "A JSON bookmark for https://www.python.org titled Python.",
     obj({"title": text(40), "url": {"type": "string", "pattern": "^https?://[A-Za-z0-9./_-]{3,40}$"}})),
    ("nested-course", "A JSON course: Biology 101, taught by Dr. Lee, with two topics.",
     obj({"course": text(30), "teacher": obj({"name": text(30), "title": enum("Dr.", "Prof.", "Mr.", "Ms.")}),
          "topics": items(text(20), 1, 3)})),
    ("bool-flags", "A JSON object saying the feature is enabled and not beta.",
     obj({"feature": text(30), "enabled": BOOL, "beta": BOOL})),
]
