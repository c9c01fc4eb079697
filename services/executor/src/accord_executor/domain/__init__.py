"""Pure executor logic: templates over step outputs, pages, results and failure codes."""
