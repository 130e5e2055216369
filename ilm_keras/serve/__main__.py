"""`ilm-serve PRESET` / `python -m ilm_keras.serve PRESET`: serve a trained
ILM over HTTP (the JSON API and chat page of `ilm_keras.serve.app`).

    ilm-serve runs/quickstart/preset --host 127.0.0.1 --port 8000

then open http://127.0.0.1:8000/ . The model is loaded (and warmed up)
once, before the server accepts requests.
"""

import argparse
import ipaddress
import sys

from ilm_keras.chat.options import add_model_options
from ilm_keras.chat.options import load_chat_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="ilm-serve", description="Serve a trained ILM preset over HTTP.")
    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument("--max-conversations", type=int, default=1000,
                        help="conversations kept at once (default 1000)")
    parser.add_argument("--conversation-max-age", type=float, default=3600.0,
                        help="idle seconds before a conversation is "
                        "forgotten (default 3600)")
    parser.add_argument("--max-body-bytes", type=int, default=65536,
                        help="larger request bodies get 413 (default 65536)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    return args


def build_app(args, log=print):
    """The app for parsed `args`: the preset loaded and warmed up once."""
    from ilm_keras.serve.app import create_app

    chat_model, _ = load_chat_model(args, log=log)
    return create_app(
        chat_model, max_conversations=args.max_conversations,
        conversation_max_age_s=args.conversation_max_age,
        max_body_bytes=args.max_body_bytes,
        max_message_chars=args.max_message_chars)


def main(argv=None):
    args = parse_args(argv)
    from ilm_keras.utils.quiet import quiet_backend_logs

    quiet_backend_logs()
    try:
        import uvicorn
    except ImportError:
        print('ilm-serve needs the serve extra: pip install -e ".[serve]"',
              file=sys.stderr)
        return 2
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        print(f"ilm-serve: warning: {args.host} is not a loopback address; "
              "the server has no authentication.", file=sys.stderr)
    try:
        app = build_app(args, log=lambda line: print(line, file=sys.stderr, flush=True))
    except (FileNotFoundError, ValueError) as error:
        print(f"ilm-serve: {error}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
