"""The method: TransMix's label (:mod:`.mixing`), the class token's attention it reads (:mod:`.attention`), and the
models it reads it from (:mod:`.models`). Start here."""
