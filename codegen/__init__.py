"""C code generation: the emitter (`codegen.emit`), constant arrays (`codegen.weights`), the op -> C table
(`codegen.ops`) and the jinja2 templates of the generated files (`codegen/templates`)."""
