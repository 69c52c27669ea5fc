"""A command tool for AgentHelm: reads its arguments as JSON on stdin, prints its result on
stdout, and reports failure with a message on stderr and a non-zero exit status."""
import json
import pathlib
import re
import sys

NOTES = pathlib.Path("notes")


def note(args):
    name = args.get("name", "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        sys.exit(f"bad note name {name!r}: use letters, digits, - and _")
    return NOTES / f"{name}.txt"


def main():
    action = sys.argv[1]
    args = json.load(sys.stdin)
    if action == "write":
        NOTES.mkdir(exist_ok=True)
        note(args).write_text(args["text"])
        print(json.dumps({"written": args["name"]}))
    elif action == "read":
        path = note(args)
        if not path.exists():
            sys.exit(f"no note called {args['name']!r}")
        print(path.read_text())
    elif action == "delete":
        note(args).unlink(missing_ok=True)
        print(json.dumps({"deleted": args["name"]}))
    elif action == "list":
        print(json.dumps(sorted(p.stem for p in NOTES.glob("*.txt"))))
    else:
        sys.exit(f"unknown action {action!r}")


main()
