"""`ilm-chat PRESET` / `python -m ilm_keras.chat PRESET`: chat in a terminal.

A multi-turn conversation with a trained ILM: each line you type gets one
answer (`ilm_keras.chat.conversation.Conversation`). Type /help for what it
understands, /reset to start over, /quit (or end of input) to leave. Lines
can also be piped in: `printf 'describe item_1014\\n' | ilm-chat PRESET`.
"""

import argparse
import sys
import time

from ilm_keras.chat.options import add_model_options
from ilm_keras.chat.options import load_chat_model
from ilm_keras.utils.quiet import quiet_backend_logs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="ilm-chat", description=__doc__.splitlines()[0].split(": ", 1)[-1])
    add_model_options(parser)
    parser.add_argument("--timing", action="store_true",
                        help="print each answer's time")
    return parser.parse_args(argv)


def chat(conversation, stdin, stdout, timing=False, max_turns=None):
    """Reads messages from `stdin` until /quit or its end; answers each.

    Args:
        conversation: a `Conversation`.
        stdin, stdout: text streams (a terminal or pipes).
        timing: print each answer's time in seconds.
        max_turns: stop after this many messages (None: no limit).

    Returns:
        The number of messages answered.
    """
    interactive = stdin.isatty() and stdout.isatty()
    if interactive:
        try:  # line editing and history; `input` then prompts on stdout
            import readline  # noqa: F401
        except ImportError:
            pass
    turns = 0
    while max_turns is None or turns < max_turns:
        if interactive:
            try:
                line = input("you> ")
            except EOFError:
                stdout.write("\n")
                break
        else:
            line = stdin.readline()
            if not line:
                break
            line = line.rstrip("\n")
            if not line.strip():
                continue
            stdout.write(f"you> {line}\n")
        if not line.strip():
            continue
        start = time.perf_counter()
        reply = conversation.respond(line)
        turns += 1
        for notice in reply.notices:
            stdout.write(f"  (note: {notice})\n")
        text = reply.text.replace("\n", "\n     ")
        stdout.write(f"ilm> {text}\n")
        if timing:
            stdout.write(f"  ({time.perf_counter() - start:.3f}s)\n")
        stdout.flush()
        if reply.intent == "quit":
            break
    return turns


def main(argv=None):
    args = parse_args(argv)
    quiet_backend_logs()
    try:
        chat_model, _ = load_chat_model(
            args, log=lambda line: print(line, file=sys.stderr, flush=True))
    except (FileNotFoundError, ValueError) as error:
        print(f"ilm-chat: {error}", file=sys.stderr)
        return 2
    from ilm_keras.chat.conversation import Conversation

    conversation = Conversation(chat_model,
                                max_message_chars=args.max_message_chars)
    print("Chat with the ILM (/help for examples, /quit to leave).", flush=True)
    try:
        chat(conversation, sys.stdin, sys.stdout, timing=args.timing)
    except KeyboardInterrupt:
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
