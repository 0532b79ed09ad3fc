//! The selector string grammar (Kubernetes `labels.Parse`) and its conversion into a
//! [`LabelSelector`] the way jumpstarter 0.9.0 `ParseLabelSelector` does it.
//!
//! ```text
//! selector    = [ requirement *( "," requirement ) ]
//! requirement = "!" key | key | key ( "=" | "==" | "!=" ) value | key ( "in" | "notin" ) "(" values ")"
//! ```

use std::collections::BTreeMap;

use super::{LabelSelector, Operator, Requirement, SelectorError, check_key, check_value};

/// Parses a selector string such as `board=rpi4,env in (lab,ci),!broken`.
///
/// `k=v` and `k==v` become `matchLabels` (two different values for one key is an error);
/// `k!=v` becomes a `NotIn` requirement, merged per key; `in`, `notin`, `k` and `!k` become
/// `In`, `NotIn`, `Exists` and `DoesNotExist`. Set values come out sorted and de-duplicated,
/// and expressions are ordered by key. A blank string is the empty selector.
pub fn parse(input: &str) -> Result<LabelSelector, SelectorError> {
    let tokens = lex(input);
    let mut parser = Parser {
        input,
        tokens: &tokens,
        next: 0,
    };
    let mut parsed = Vec::new();
    if !matches!(parser.peek().kind, Kind::End) {
        loop {
            parsed.push(parser.requirement()?);
            let token = parser.advance();
            match token.kind {
                Kind::End => break,
                Kind::Comma => {}
                _ => return Err(parser.unexpected(token, "',' or end of selector")),
            }
        }
    }
    assemble(parsed)
}

/// What one parsed requirement says, before it is folded into a [`LabelSelector`].
enum Parsed {
    Equals(String, String),
    NotEquals(String, String),
    Set(Requirement),
}

fn assemble(parsed: Vec<Parsed>) -> Result<LabelSelector, SelectorError> {
    let mut selector = LabelSelector::default();
    let mut not_equal: Vec<(String, Vec<String>)> = Vec::new();
    for item in parsed {
        match item {
            Parsed::Equals(key, value) => match selector.match_labels.get(&key) {
                Some(first) if *first != value => {
                    return Err(SelectorError::ConflictingEquality {
                        first: first.clone(),
                        key,
                        second: value,
                    });
                }
                _ => {
                    selector.match_labels.insert(key, value);
                }
            },
            Parsed::NotEquals(key, value) => match not_equal.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(value),
                None => not_equal.push((key, vec![value])),
            },
            Parsed::Set(requirement) => selector.match_expressions.push(requirement),
        }
    }
    for (key, values) in not_equal {
        selector.match_expressions.push(Requirement {
            key,
            operator: Operator::NotIn,
            values: sorted_set(values),
        });
    }
    selector.match_expressions.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(selector)
}

fn sorted_set(values: Vec<String>) -> Vec<String> {
    let set: BTreeMap<String, ()> = values.into_iter().map(|v| (v, ())).collect();
    set.into_keys().collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word(String),
    Comma,
    Open,
    Close,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    position: usize,
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '<' | '>')
}

fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some((position, c)) = chars.next() {
        let followed_by_equals = chars.peek().is_some_and(|(_, next)| *next == '=');
        let kind = match c {
            c if c.is_whitespace() => continue,
            ',' => Kind::Comma,
            '(' => Kind::Open,
            ')' => Kind::Close,
            '<' => Kind::Less,
            '>' => Kind::Greater,
            '!' if followed_by_equals => {
                chars.next();
                Kind::NotEquals
            }
            '!' => Kind::Bang,
            '=' if followed_by_equals => {
                chars.next();
                Kind::DoubleEquals
            }
            '=' => Kind::Equals,
            _ => {
                let mut end = position + c.len_utf8();
                while let Some((at, next)) = chars.peek().copied() {
                    if next.is_whitespace() || is_special(next) {
                        break;
                    }
                    end = at + next.len_utf8();
                    chars.next();
                }
                Kind::Word(input[position..end].to_owned())
            }
        };
        tokens.push(Token { kind, position });
    }
    tokens.push(Token {
        kind: Kind::End,
        position: input.len(),
    });
    tokens
}

struct Parser<'a> {
    input: &'a str,
    tokens: &'a [Token],
    next: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // Invariant: `lex` always ends with `End`, and `advance` never moves past it.
        &self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if !matches!(token.kind, Kind::End) {
            self.next += 1;
        }
        token
    }

    fn unexpected(&self, token: Token, expected: &str) -> SelectorError {
        let found = match &token.kind {
            Kind::Word(word) => format!("'{word}'"),
            Kind::Comma => "','".to_owned(),
            Kind::Open => "'('".to_owned(),
            Kind::Close => "')'".to_owned(),
            Kind::Bang => "'!'".to_owned(),
            Kind::Equals => "'='".to_owned(),
            Kind::DoubleEquals => "'=='".to_owned(),
            Kind::NotEquals => "'!='".to_owned(),
            Kind::Greater => "'>'".to_owned(),
            Kind::Less => "'<'".to_owned(),
            Kind::End => "end of selector".to_owned(),
        };
        SelectorError::Syntax {
            input: self.input.to_owned(),
            position: token.position,
            message: format!("found {found}, expected {expected}"),
        }
    }

    /// A label key: any word except the keywords `in` and `notin`, with valid key syntax.
    fn key(&mut self) -> Result<String, SelectorError> {
        let token = self.advance();
        match &token.kind {
            Kind::Word(word) if word != "in" && word != "notin" => {
                check_key(word)?;
                Ok(word.clone())
            }
            _ => Err(self.unexpected(token, "a label key")),
        }
    }

    fn at_requirement_end(&self) -> bool {
        matches!(self.peek().kind, Kind::Comma | Kind::End)
    }

    fn requirement(&mut self) -> Result<Parsed, SelectorError> {
        if matches!(self.peek().kind, Kind::Bang) {
            self.advance();
            let key = self.key()?;
            if !self.at_requirement_end() {
                let token = self.advance();
                return Err(self.unexpected(token, "',' or end of selector after '!key'"));
            }
            return Ok(Parsed::Set(Requirement {
                key,
                operator: Operator::DoesNotExist,
                values: Vec::new(),
            }));
        }
        let key = self.key()?;
        if self.at_requirement_end() {
            return Ok(Parsed::Set(Requirement {
                key,
                operator: Operator::Exists,
                values: Vec::new(),
            }));
        }
        let token = self.advance();
        match &token.kind {
            Kind::Equals | Kind::DoubleEquals => {
                let value = self.exact_value(&key)?;
                Ok(Parsed::Equals(key, value))
            }
            Kind::NotEquals => {
                let value = self.exact_value(&key)?;
                Ok(Parsed::NotEquals(key, value))
            }
            Kind::Word(word) if word == "in" || word == "notin" => {
                let operator = if word == "in" {
                    Operator::In
                } else {
                    Operator::NotIn
                };
                let values = self.value_list(&key)?;
                if values.is_empty() {
                    return Err(SelectorError::EmptyValues { key, operator });
                }
                Ok(Parsed::Set(Requirement {
                    key,
                    operator,
                    values: sorted_set(values),
                }))
            }
            Kind::Greater | Kind::Less => Err(SelectorError::UnsupportedOperator {
                key,
                operator: if token.kind == Kind::Greater {
                    ">"
                } else {
                    "<"
                }
                .to_owned(),
            }),
            _ => Err(self.unexpected(
                token,
                "an operator ('=', '==', '!=', 'in', 'notin'), ',' or end of selector",
            )),
        }
    }

    /// The value after `=`, `==` or `!=`; it may be empty (`k=`).
    fn exact_value(&mut self, key: &str) -> Result<String, SelectorError> {
        if self.at_requirement_end() {
            return Ok(String::new());
        }
        let token = self.advance();
        match &token.kind {
            Kind::Word(value) => {
                check_value(key, value)?;
                Ok(value.clone())
            }
            _ => Err(self.unexpected(token, "a label value")),
        }
    }

    /// `( v1, v2, ... )`; empty slots (`(a,)`) are the empty value.
    fn value_list(&mut self, key: &str) -> Result<Vec<String>, SelectorError> {
        let token = self.advance();
        if token.kind != Kind::Open {
            return Err(self.unexpected(token, "'('"));
        }
        let mut values = Vec::new();
        let mut expecting_value = true;
        let mut saw_comma = false;
        loop {
            let token = self.advance();
            match &token.kind {
                Kind::Word(value) if expecting_value => {
                    check_value(key, value)?;
                    values.push(value.clone());
                    expecting_value = false;
                }
                Kind::Comma => {
                    if expecting_value {
                        values.push(String::new());
                    }
                    expecting_value = true;
                    saw_comma = true;
                }
                Kind::Close => {
                    if expecting_value && saw_comma {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                _ if expecting_value => {
                    return Err(self.unexpected(token, "a label value, ',' or ')'"));
                }
                _ => return Err(self.unexpected(token, "',' or ')'")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn blank_is_empty() {
        assert_eq!(parse("").expect("ok"), LabelSelector::default());
        assert_eq!(parse("  \t").expect("ok"), LabelSelector::default());
    }

    #[test]
    fn every_form() {
        let parsed = parse("a=1, b==2, c!=x, c!=w, d in (q,p,p), e notin (z), f, !g").expect("ok");
        let labels: Vec<_> = parsed.match_labels.iter().collect();
        assert_eq!(
            labels,
            vec![
                (&"a".to_owned(), &"1".to_owned()),
                (&"b".to_owned(), &"2".to_owned())
            ]
        );
        assert_eq!(
            parsed.match_expressions,
            vec![
                req("c", Operator::NotIn, &["w", "x"]),
                req("d", Operator::In, &["p", "q"]),
                req("e", Operator::NotIn, &["z"]),
                req("f", Operator::Exists, &[]),
                req("g", Operator::DoesNotExist, &[]),
            ]
        );
    }

    #[test]
    fn empty_values_and_keywords_as_values() {
        let parsed = parse("a=,b in (x,),c=in").expect("ok");
        assert_eq!(parsed.match_labels.get("a").map(String::as_str), Some(""));
        assert_eq!(parsed.match_labels.get("c").map(String::as_str), Some("in"));
        assert_eq!(
            parsed.match_expressions,
            vec![req("b", Operator::In, &["", "x"])]
        );
    }

    #[test]
    fn repeated_equal_values_are_fine() {
        let parsed = parse("a=1,a=1").expect("ok");
        assert_eq!(parsed.match_labels.len(), 1);
    }

    #[test]
    fn errors_name_the_offending_part() {
        let err = parse("a=1,a=2").expect_err("conflict");
        assert_eq!(
            err.to_string(),
            "invalid selector: label a cannot have multiple equality requirements with \
             different values (1 and 2)"
        );
        let err = parse("a in ()").expect_err("empty set");
        assert!(
            err.to_string().contains("needs at least one value"),
            "{err}"
        );
        let err = parse("bad key=1").expect_err("space");
        assert!(err.to_string().contains("found 'key'"), "{err}");
        let err = parse("a=1,").expect_err("trailing comma");
        assert!(err.to_string().contains("end of selector"), "{err}");
        let err = parse("-a=1").expect_err("bad key");
        assert!(
            matches!(err, SelectorError::InvalidKey { ref key, .. } if key == "-a"),
            "{err}"
        );
        let err = parse("a=b/c").expect_err("bad value");
        assert!(
            matches!(err, SelectorError::InvalidValue { ref value, .. } if value == "b/c"),
            "{err}"
        );
        let err = parse("a>1").expect_err("gt");
        assert!(
            matches!(err, SelectorError::UnsupportedOperator { .. }),
            "{err}"
        );
        let err = parse("!a=1").expect_err("bang with value");
        assert!(err.to_string().contains("'='"), "{err}");
        let err = parse("in=1").expect_err("keyword key");
        assert!(err.to_string().contains("a label key"), "{err}");
        let err = parse("a in (x y)").expect_err("missing comma");
        assert!(err.to_string().contains("found 'y'"), "{err}");
        let err = parse("a in x").expect_err("missing paren");
        assert!(
            matches!(err, SelectorError::Syntax { position: 5, .. }),
            "{err}"
        );
    }
}
