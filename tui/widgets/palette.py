"""A command-palette provider that offers the current screen's own key bindings.

A screen lists it in ``COMMANDS``; the palette then shows every action the screen allows at
the moment (its ``check_action`` is asked, so what the caller's role forbids stays hidden).
"""
from dataclasses import replace
from functools import partial

from textual.command import DiscoveryHit, Hit, Provider


class ScreenBindings(Provider):
    def _commands(self):
        screen = self.screen
        seen = set()
        for binding in getattr(screen, "BINDINGS", ()):
            if not getattr(binding, "description", "") or binding.action in seen:
                continue
            seen.add(binding.action)
            name = binding.action.split("(", 1)[0]
            if screen.check_action(name, ()) is not True:
                continue
            key = self.app.get_key_display(replace(binding, key=binding.key.split(",")[0]))
            label = f"{binding.description} ({key})"
            yield label, partial(screen.run_action, binding.action), binding.tooltip or ""

    async def discover(self):
        for label, callback, help_text in self._commands():
            yield DiscoveryHit(label, callback, help=help_text or None)

    async def search(self, query):
        matcher = self.matcher(query)
        for label, callback, help_text in self._commands():
            score = matcher.match(label)
            if score > 0:
                yield Hit(score, matcher.highlight(label), callback, help=help_text or None)


__all__ = ["ScreenBindings"]
