"""The conversation logic, and `ilm-chat` end to end through piped stdin."""

import os
import subprocess
import sys

from ilm_keras.chat.catalogue import Catalogue
from ilm_keras.chat.catalogue import Unresolved
from ilm_keras.chat.catalogue import normalize
from ilm_keras.chat.chat_model import tidy_generated
from ilm_keras.chat.conversation import Conversation
from tiny_chat_preset import ITEMS
from tiny_chat_preset import TITLES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def item(title):
    return ITEMS[TITLES.index(title)]


def test_describe_template_is_the_pipelines():
    from ilm_keras.chat import chat_model
    from ilm_keras.experiments import pipeline

    assert chat_model.DESCRIBE_TEMPLATE == pipeline.DESCRIBE_TEMPLATE


def test_catalogue_finds_titles_ids_and_suggestions(chat_model):
    catalogue = chat_model.catalogue
    assert isinstance(catalogue, Catalogue)
    assert normalize("  Harbor ELECTRIC (1950)!") == "harbor electric 1950"
    assert catalogue.resolve("harbor electric") == item("Harbor Electric (1950)")
    assert catalogue.resolve("Harbor-Electric, 1950") == item("Harbor Electric (1950)")
    assert catalogue.resolve("item_1003") == "1003"
    assert catalogue.resolve("1003") == "1003"
    assert catalogue.resolve("the matrix") == item("Matrix, The (1999)")
    heat = catalogue.resolve("Heat")
    assert isinstance(heat, Unresolved) and heat.ambiguous
    assert heat.candidates == [item("Heat (1986)"), item("Heat (1995)")]
    assert catalogue.resolve("heat 1995") == item("Heat (1995)")
    typo = catalogue.resolve("Harbr Electirc")
    assert isinstance(typo, Unresolved) and not typo.ambiguous
    assert typo.candidates[0] == item("Harbor Electric (1950)")
    assert catalogue.search("galaxy", limit=3) == [item(t) for t in TITLES[10:13]]
    items, unresolved = catalogue.resolve_list(
        "Sense and Sensibility, Dragon Night and item_1001 please")
    assert items == [item("Sense and Sensibility (1995)"),
                     item("Dragon Night (1953)"), "1001"]
    assert unresolved == []
    assert catalogue.title("1001") == "Harbor Electric (1950)"
    assert tidy_generated("A ( 1990 ) . Genres : B [UNK] .") == "A (1990). Genres: B."


def test_conversation_keeps_context_and_never_repeats_mentions(chat_model):
    conversation = Conversation(chat_model)
    reply = conversation.respond(
        "Recommend something after Harbor Electric, Dragon Night and Galaxy Lost")
    mentioned = [item("Harbor Electric (1950)"), item("Dragon Night (1953)"),
                 item("Galaxy Lost (1956)")]
    assert reply.intent == "recommend"
    assert reply.history == mentioned
    assert len(reply.items) == 3
    for entry in reply.items:
        assert entry["id"] not in mentioned
        assert entry["title"] == TITLES[ITEMS.index(entry["id"])]
        assert f"{entry['title']} [item_{entry['id']}]" in reply.text
    first = reply.items[0]["id"]

    # "the first one" is the first recommendation; describing it mentions it.
    reply = conversation.respond("what is the first one about?")
    assert reply.intent == "describe" and reply.items[0]["id"] == first
    assert reply.text.startswith(f"{TITLES[ITEMS.index(first)]} [item_{first}]: ")
    assert reply.history == mentioned + [first]

    # The next request keeps the earlier items: none comes back.
    reply = conversation.respond("I liked item_1020 too, what next?")
    assert reply.intent == "recommend"
    assert reply.history == mentioned + [first, "1020"]
    assert not {i["id"] for i in reply.items} & set(reply.history)

    # "more": no item shown before.
    shown = {i["id"] for i in reply.items}
    reply = conversation.respond("more")
    assert reply.items and not {i["id"] for i in reply.items} & shown

    reply = conversation.respond("/reset")
    assert reply.intent == "reset" and reply.history == [] and reply.user is None


def test_ambiguous_and_unknown_titles_get_did_you_mean(chat_model):
    conversation = Conversation(chat_model)
    reply = conversation.respond("recommend something after Heat")
    assert reply.intent == "clarify"
    assert "Heat (1986) [item_" in reply.text and "Heat (1995) [item_" in reply.text
    assert [c["id"] for c in reply.suggestions[0]["candidates"]] == [
        item("Heat (1986)"), item("Heat (1995)")]
    assert reply.history == []  # nothing changed
    reply = conversation.respond("what is Harbr Electirc about?")
    assert reply.intent == "clarify" and "Did you mean" in reply.text
    assert reply.suggestions[0]["candidates"][0]["id"] == item("Harbor Electric (1950)")
    reply = conversation.respond('recommend something after "heat 1995"')
    assert reply.intent == "recommend" and reply.history == [item("Heat (1995)")]


def test_user_next_and_free_text(chat_model):
    conversation = Conversation(chat_model)
    reply = conversation.respond("What should user_3 watch next?")
    assert reply.intent == "user" and reply.user == "3"
    assert len(reply.items) == 3 and reply.text.startswith("For user_3, try:")
    reply = conversation.respond("describe item_1007")
    assert reply.intent == "describe" and reply.items[0]["id"] == "1007"
    reply = conversation.respond("Garden Velvet is lovely")
    assert reply.intent == "free"
    assert [i["id"] for i in reply.items] == [item("Garden Velvet (1959)")]
    assert item("Garden Velvet (1959)") in reply.history
    assert conversation.respond("/help").intent == "help"
    assert conversation.respond("/nope").text.startswith("Unknown command")
    assert conversation.respond("x" * 3000).intent == "error"
    assert conversation.respond("/quit").intent == "quit"


def test_history_drops_the_oldest_items_and_says_so(chat_model):
    conversation = Conversation(chat_model)
    # max_mentions=6: seven items cannot all be in one prompt.
    names = ", ".join(f"item_{i}" for i in ITEMS[:7])
    reply = conversation.respond(f"recommend something after {names}")
    assert reply.intent == "recommend"
    assert reply.history == ITEMS[1:7]
    assert len(reply.notices) == 1 and "forgot the oldest item" in reply.notices[0]
    assert "Harbor Electric (1950) [item_1001]" in reply.notices[0]
    # Dropped, but still never recommended.
    assert "1001" not in {i["id"] for i in reply.items}
    kept, dropped = chat_model.fit_history(ITEMS[:7])
    assert (kept, dropped) == (ITEMS[1:7], ITEMS[:1])


def test_ilm_chat_end_to_end_through_piped_stdin(tiny_preset):
    lines = [
        "recommend something after Harbor Electric and Dragon Night",
        "what is the first one about?",
        "recommend something after Heat",
        "what should user_2 watch next?",
        "/history",
        "/quit",
        "this line is never read",
    ]
    env = dict(os.environ, ILM_KERAS_QUIET_LOGS="1")
    result = subprocess.run(
        [sys.executable, "-m", "ilm_keras.chat", tiny_preset, "--k", "3",
         "--max-k", "5", "--timing"],
        input="\n".join(lines) + "\n", capture_output=True, text=True,
        timeout=240, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Chat with the ILM" in out
    answers = out.split("ilm> ")[1:]
    assert len(answers) == 6, out
    assert answers[0].startswith(
        "After Harbor Electric (1950), Dragon Night (1953), try:")
    assert answers[0].count("[item_") == 3
    assert "[item_1001]" not in answers[0] and f"[item_{item('Dragon Night (1953)')}]" not in answers[0]
    assert "]: " in answers[1]
    assert "which one?" in answers[2] and "Heat (1995) [item_" in answers[2]
    assert answers[3].startswith("For user_2, try:")
    assert "Harbor Electric (1950) [item_1001]" in answers[4]
    assert answers[5].startswith("Goodbye.")
    assert "never read" not in out
    assert "Loaded" in result.stderr and "warmed up" in result.stderr


def test_ilm_chat_reports_a_missing_preset(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "ilm_keras.chat", str(tmp_path / "nope")],
        input="", capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2
    assert "No preset folder" in result.stderr
