//! A look at YAML text before the parser sees it: the YAML parser's work grows with the square of
//! the nesting depth (a 100 KB `[[[[…]]]]` took seconds), and aliases can multiply a small text
//! into a huge value, so a file nested deeper than any spec needs, with more nodes or more
//! aliases than any spec has, is refused here, in one linear pass, with the line where it went
//! too far. The scan is deliberately simple (it knows quotes, comments, flow brackets, block
//! indentation, `- ` entries and block scalars, not the whole grammar): it errs towards counting
//! too little, and the parser's own limits stay behind it.

/// The deepest nesting accepted. A spec is about five levels deep.
pub const MAX_DEPTH: usize = 64;

/// The most nodes (lines with content, flow entries) accepted in one text.
pub const MAX_NODES: usize = 100_000;

/// The most alias uses (`*name`) accepted in one text.
pub const MAX_ALIASES: usize = 256;

/// The most brackets (`[`, `{`) open at once, counted everywhere, quotes or not: the backstop
/// for a quote the scan takes for the start of a string where the parser does not, which would
/// otherwise hide everything after it.
pub const MAX_RAW_BRACKETS: usize = 256;

/// Why a text is refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeProblem {
    #[error("nested more than {MAX_DEPTH} levels deep at line {line}; no spec needs that")]
    TooDeep { line: usize },
    #[error("more than {MAX_NODES} nodes (at line {line}); no spec needs that")]
    TooManyNodes { line: usize },
    #[error("more than {MAX_ALIASES} aliases (at line {line}); no spec needs that")]
    TooManyAliases { line: usize },
}

impl ShapeProblem {
    /// The 1-based line where the limit was passed.
    pub fn line(&self) -> usize {
        match self {
            ShapeProblem::TooDeep { line }
            | ShapeProblem::TooManyNodes { line }
            | ShapeProblem::TooManyAliases { line } => *line,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// The lines of `text` as YAML breaks them: at `\n`, `\r\n` and a lone `\r` alike (a scan
/// that missed a lone `\r` would read a comment as running to the end of the file).
fn yaml_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\n', '\r']) {
            Some(at) => {
                let next = if current[at..].starts_with("\r\n") {
                    at + 2
                } else {
                    at + 1
                };
                rest = Some(&current[next..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Checks the nesting depth, node count and alias count of `text`. Where the scan cannot be
/// sure (a bracket in what may be a plain scalar), it counts: a false refusal costs a spec
/// nobody would write, a miss costs the parser minutes.
pub fn check_shape(text: &str) -> Result<(), ShapeProblem> {
    let mut quote = Quote::None;
    let mut flow_depth = 0usize;
    // Indentations of the enclosing block collections.
    let mut indents: Vec<usize> = Vec::new();
    // The indentation of the line that opened a block scalar (`|`, `>`), whose lines are text.
    let mut block_scalar_of: Option<usize> = None;
    let mut nodes = 0usize;
    let mut aliases = 0usize;
    let mut raw_brackets = 0usize;
    for (index, line) in yaml_lines(text).enumerate() {
        let number = index + 1;
        let indent = line.len() - line.trim_start_matches(' ').len();
        let content = &line[indent..];
        for c in content.chars() {
            match c {
                '[' | '{' => raw_brackets += 1,
                ']' | '}' => raw_brackets = raw_brackets.saturating_sub(1),
                _ => {}
            }
        }
        if raw_brackets > MAX_RAW_BRACKETS {
            return Err(ShapeProblem::TooDeep { line: number });
        }
        // A document marker starts a new document, which the parser reads on its own (the
        // spec reader splits documents first): nothing of the scan's state carries over.
        if line.starts_with("---") || line.starts_with("...") {
            quote = Quote::None;
            flow_depth = 0;
            indents.clear();
            block_scalar_of = None;
            raw_brackets = 0;
            continue;
        }
        if let Some(opener) = block_scalar_of {
            if content.trim().is_empty() || indent > opener {
                continue;
            }
            block_scalar_of = None;
        }
        if quote == Quote::None && flow_depth == 0 {
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            while indents.last().is_some_and(|&open| open >= indent) {
                indents.pop();
            }
            indents.push(indent);
        }
        nodes += 1;
        // `- - - x` nests a sequence per dash on one line.
        let mut dashes = 0usize;
        let mut rest = content;
        while let Some(after) = rest.strip_prefix("- ") {
            dashes += 1;
            rest = after.trim_start_matches(' ');
        }
        let block_depth = indents.len() + dashes;
        if block_depth + flow_depth > MAX_DEPTH {
            return Err(ShapeProblem::TooDeep { line: number });
        }
        let mut previous = ' ';
        // The last character outside quotes that is not a space: a quote opens a quoted scalar
        // only where a scalar can start (first on the line or after the line's leading `- `
        // entries, after `: `, after `[`, `{` or, in a flow collection, `,`); elsewhere it is
        // part of a plain scalar, as it is for the parser.
        let mut last_significant: Option<char> = None;
        // Whether everything significant on the line so far is `- ` entries and `? ` keys.
        let mut only_indicators = true;
        let mut comment_at = content.len();
        let mut chars = content.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match quote {
                Quote::Single => {
                    if c == '\'' {
                        if chars.peek().map(|(_, next)| *next) == Some('\'') {
                            chars.next();
                        } else {
                            quote = Quote::None;
                        }
                    }
                }
                Quote::Double => match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => quote = Quote::None,
                    _ => {}
                },
                Quote::None => {
                    let after_space = matches!(previous, ' ' | '\t');
                    let at_token_start = after_space || matches!(previous, '[' | '{' | ',');
                    let scalar_can_start = match last_significant {
                        None | Some(':' | '[' | '{') => true,
                        Some('-' | '?') => only_indicators,
                        Some(',') => flow_depth > 0,
                        Some(_) => false,
                    };
                    match c {
                        '#' if after_space || at == 0 => {
                            comment_at = at;
                            break;
                        }
                        '\'' | '"' if at_token_start && scalar_can_start => {
                            quote = if c == '"' {
                                Quote::Double
                            } else {
                                Quote::Single
                            };
                        }
                        '[' | '{' if at_token_start || previous == ':' => {
                            flow_depth += 1;
                            nodes += 1;
                            if block_depth + flow_depth > MAX_DEPTH {
                                return Err(ShapeProblem::TooDeep { line: number });
                            }
                        }
                        ']' | '}' => flow_depth = flow_depth.saturating_sub(1),
                        ',' if flow_depth > 0 => nodes += 1,
                        '*' if at_token_start
                            && chars.peek().is_some_and(|(_, next)| {
                                next.is_alphanumeric() || *next == '_'
                            }) =>
                        {
                            aliases += 1;
                            if aliases > MAX_ALIASES {
                                return Err(ShapeProblem::TooManyAliases { line: number });
                            }
                        }
                        _ => {}
                    }
                    if !c.is_whitespace() {
                        if !(matches!(c, '-' | '?') && after_space) {
                            only_indicators = false;
                        }
                        last_significant = Some(c);
                    }
                }
            }
            previous = c;
        }
        if nodes > MAX_NODES {
            return Err(ShapeProblem::TooManyNodes { line: number });
        }
        if quote == Quote::None && flow_depth == 0 && block_scalar_header(&content[..comment_at]) {
            block_scalar_of = Some(indent);
        }
    }
    Ok(())
}

/// Whether `content` (without its comment) ends with a block scalar header standing where a
/// value can start: `key: |`, `- >-`, `|2` alone. Anything else (`a |`, the end of a plain
/// scalar) is not one, and the lines after it are scanned.
fn block_scalar_header(content: &str) -> bool {
    let trimmed = content.trim_end();
    let (mut before, header) = match trimmed.rsplit_once(' ') {
        Some((before, header)) => (before.trim_end(), header),
        None => ("", trimmed),
    };
    // An anchor or a tag may stand between the key (or dash) and the header: `- &s |`.
    while let Some((rest, token)) = before.rsplit_once(' ') {
        if token.starts_with('&') || token.starts_with('!') {
            before = rest.trim_end();
        } else {
            break;
        }
    }
    if before.starts_with('&') || before.starts_with('!') {
        before = "";
    }
    let mut chars = header.chars();
    matches!(chars.next(), Some('|' | '>'))
        && chars.all(|c| matches!(c, '-' | '+' | '1'..='9'))
        && (before.is_empty() || before.ends_with(':') || before.ends_with('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_specs_pass() {
        for text in [
            "apiVersion: prism.launcher/v1\nkind: Process\nmetadata:\n  name: a\nspec:\n  binary: /bin/sh\n  args: [\"-c\", \"echo '[[[['\"]\n",
            "spec:\n  args:\n    - |\n      if [ -f x ]; then\n        echo [[[[[[[[\n      fi\n    - done\n",
            "a: 'it''s [ not ] a flow'\nb: \"also [[[ \\\" not\"\nc: a[1] # [[[[ a comment\n",
            "env: &common {A: \"1\"}\nother: *common\n",
        ] {
            assert_eq!(check_shape(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn deep_flow_nesting_is_refused_with_its_line() {
        let deep = format!(
            "apiVersion: v1\nkind: {}{}\n",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(check_shape(&deep), Err(ShapeProblem::TooDeep { line: 2 }));
        let just_fits = format!("a: {}{}\n", "[".repeat(60), "]".repeat(60));
        assert_eq!(check_shape(&just_fits), Ok(()));
    }

    #[test]
    fn deep_block_nesting_and_dash_chains_are_refused() {
        let mut block = String::new();
        for level in 0..70 {
            block.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
        }
        assert_eq!(check_shape(&block), Err(ShapeProblem::TooDeep { line: 65 }));
        let dashes = format!("{}x\n", "- ".repeat(80));
        assert_eq!(check_shape(&dashes), Err(ShapeProblem::TooDeep { line: 1 }));
    }

    #[test]
    fn too_many_nodes_or_aliases_are_refused() {
        let wide = format!("a: [{}]\n", "1,".repeat(MAX_NODES + 1));
        assert!(matches!(
            check_shape(&wide),
            Err(ShapeProblem::TooManyNodes { line: 1 })
        ));
        let laughs = format!("a: &a [x]\nb: [{}]\n", "*a, ".repeat(MAX_ALIASES + 1));
        assert_eq!(
            check_shape(&laughs),
            Err(ShapeProblem::TooManyAliases { line: 2 })
        );
    }

    #[test]
    fn a_quote_inside_a_plain_scalar_or_a_lone_carriage_return_hides_nothing() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        // The quote is part of the plain scalar `a "b`, not the start of a string.
        let quoted = format!("apiVersion: v1\nmetadata2: a \"b\nx: {deep}\n");
        assert_eq!(check_shape(&quoted), Err(ShapeProblem::TooDeep { line: 3 }));
        // A lone CR ends a line (and the comment on it) for the parser.
        let carriage = format!("apiVersion: v1\rkind: Process # c\rx: {deep}\r");
        assert_eq!(
            check_shape(&carriage),
            Err(ShapeProblem::TooDeep { line: 3 })
        );
        let crlf = format!("a: 1\r\nb: 2\r\nx: {deep}\r\n");
        assert_eq!(check_shape(&crlf), Err(ShapeProblem::TooDeep { line: 3 }));
        // Not a block scalar: `a |` is a plain scalar, and what follows is scanned.
        let fake_block = format!("x: a |\n  y: {deep}\n");
        assert_eq!(
            check_shape(&fake_block),
            Err(ShapeProblem::TooDeep { line: 2 })
        );
    }

    #[test]
    fn a_quote_left_open_by_another_document_or_a_plain_scalar_hides_nothing() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        for text in [
            format!("a: \"open\n---\nb: {deep}\n"),
            format!("a: 'open\n---\nb: {deep}\n"),
            format!("a: \"x\n...\n---\nb: {deep}\n"),
            format!("x: b - \"\ny: {deep}\n"),
            format!("x: b , \"\ny: {deep}\n"),
            format!("x: b ? \"\ny: {deep}\n"),
        ] {
            assert!(check_shape(&text).is_err(), "{text:?}");
        }
        // Whatever the quotes, 300 open brackets are too many.
        let hidden = format!("a: \"{}\"\n", "[".repeat(300));
        assert_eq!(check_shape(&hidden), Err(ShapeProblem::TooDeep { line: 1 }));
    }

    #[test]
    fn anchored_or_tagged_block_scalars_are_text() {
        let brackets = "[".repeat(65);
        for header in ["- &s |", "key: !!str |", "key: &a !!str >-", "- !!str |"] {
            let text = format!("{header}\n  {brackets}\n  it's fine\nnext: 1\n");
            assert_eq!(check_shape(&text), Ok(()), "{text}");
        }
        // Quotes after an entry's dash still open strings.
        assert_eq!(check_shape("- \"[[[[\"\n- '[[['\n"), Ok(()));
        assert_eq!(check_shape("k: [\"a\", \"[[\"]\n"), Ok(()));
    }

    #[test]
    fn a_megabyte_of_nesting_on_one_line_is_refused() {
        let text = format!("apiVersion: {}", "[".repeat(1 << 20));
        assert_eq!(check_shape(&text), Err(ShapeProblem::TooDeep { line: 1 }));
    }
}
