//! A Sigma rule's `condition`: `and`, `or`, `not`, parentheses, and the quantified forms
//! `1 of selection_*`, `all of them`, `any of filter*`, over the rule's named selections.

use std::collections::BTreeSet;

/// A parsed condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// A selection by name.
    Name(String),
    /// Not the expression.
    Not(Box<Expr>),
    /// Every one of them.
    And(Vec<Expr>),
    /// Any one of them.
    Or(Vec<Expr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Open,
    Close,
}

fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        match c {
            '(' | ')' => {
                if !word.is_empty() {
                    out.push(Token::Word(std::mem::take(&mut word)));
                }
                out.push(if c == '(' { Token::Open } else { Token::Close });
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    out.push(Token::Word(std::mem::take(&mut word)));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(Token::Word(word));
    }
    out
}

/// Conditions nest at most this deep (a hostile rule cannot exhaust the stack).
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    names: &'a BTreeSet<String>,
    depth: usize,
}

impl Parser<'_> {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.and()?];
        while self.peek_word("or") {
            self.at += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one")
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.not()?];
        while self.peek_word("and") {
            self.at += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one")
        } else {
            Expr::And(items)
        })
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.peek_word("not") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("the condition nests deeper than {MAX_DEPTH}"));
        }
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        let expr = match token {
            Some(Token::Open) => {
                let inner = self.or()?;
                if self.tokens.get(self.at) != Some(&Token::Close) {
                    return Err("a parenthesis is not closed".into());
                }
                self.at += 1;
                inner
            }
            Some(Token::Word(w)) if self.peek_word("of") => {
                self.at += 1;
                let all = match w.to_ascii_lowercase().as_str() {
                    "all" => true,
                    "1" | "any" => false,
                    other => {
                        return Err(format!(
                            "`{other} of`: only `1 of`, `any of` and `all of` are Sigma"
                        ));
                    }
                };
                let Some(Token::Word(pattern)) = self.tokens.get(self.at).cloned() else {
                    return Err(format!("`{w} of` names no selections"));
                };
                self.at += 1;
                let matched: Vec<Expr> = self
                    .names
                    .iter()
                    .filter(|n| {
                        // `them` is every selection except those named with a leading `_`.
                        if pattern == "them" {
                            !n.starts_with('_')
                        } else {
                            wildcard(&pattern, n)
                        }
                    })
                    .map(|n| Expr::Name(n.clone()))
                    .collect();
                if matched.is_empty() {
                    return Err(format!("`{w} of {pattern}` matches no selection"));
                }
                if all {
                    Expr::And(matched)
                } else {
                    Expr::Or(matched)
                }
            }
            Some(Token::Word(w)) => {
                if ["and", "or", "not", "of"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k))
                {
                    return Err(format!("`{w}` where a selection was expected"));
                }
                if !self.names.contains(&w) {
                    return Err(format!(
                        "the condition names `{w}`, which is not a selection of the rule"
                    ));
                }
                Expr::Name(w)
            }
            Some(Token::Close) => return Err("a parenthesis closes nothing".into()),
            None => return Err("the condition ends too early".into()),
        };
        self.depth -= 1;
        Ok(expr)
    }
}

/// `*` in a selection pattern of `1 of x*`.
fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => name.strip_prefix(head).is_some_and(|rest| {
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i))
                .any(|i| wildcard(tail, &rest[i..]))
        }),
    }
}

/// Parses `text` over the selections `names`.
pub fn parse(text: &str, names: &BTreeSet<String>) -> Result<Expr, String> {
    if text.contains('|') {
        return Err(
            "aggregations (`| count() …`) are not supported; use a correlation rule".into(),
        );
    }
    let mut p = Parser {
        tokens: tokens(text),
        at: 0,
        names,
        depth: 0,
    };
    let expr = p.or()?;
    if p.at < p.tokens.len() {
        return Err(format!(
            "unexpected `{}` in the condition",
            match &p.tokens[p.at] {
                Token::Word(w) => w.as_str(),
                Token::Open => "(",
                Token::Close => ")",
            }
        ));
    }
    Ok(expr)
}

impl Expr {
    /// The value of the condition, given each selection's.
    pub fn eval(&self, selection: &mut impl FnMut(&str) -> bool) -> bool {
        match self {
            Expr::Name(n) => selection(n),
            Expr::Not(e) => !e.eval(selection),
            Expr::And(items) => items.iter().all(|e| e.eval(selection)),
            Expr::Or(items) => items.iter().any(|e| e.eval(selection)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn eval(condition: &str, selections: &[&str], true_ones: &[&str]) -> bool {
        parse(condition, &names(selections))
            .unwrap()
            .eval(&mut |n| true_ones.contains(&n))
    }

    #[test]
    fn precedence_parentheses_and_quantifiers() {
        let all = ["sel", "filter", "sel_a", "sel_b", "_helper"];
        assert!(eval("sel and not filter", &all, &["sel"]));
        assert!(!eval("sel and not filter", &all, &["sel", "filter"]));
        assert!(
            eval("sel or filter and sel_a", &all, &["sel"]),
            "and binds tighter"
        );
        assert!(!eval("(sel or filter) and sel_a", &all, &["sel"]));
        assert!(eval("1 of sel_*", &all, &["sel_b"]));
        assert!(!eval("all of sel_*", &all, &["sel_b"]));
        assert!(eval("all of sel_*", &all, &["sel_a", "sel_b"]));
        assert!(eval("any of sel_* and not 1 of filter*", &all, &["sel_a"]));
        assert!(eval("1 of them", &all, &["filter"]));
        assert!(
            !eval("1 of them", &all, &["_helper"]),
            "them leaves out _names"
        );
        assert!(eval(
            "all of them",
            &all,
            &["sel", "filter", "sel_a", "sel_b"]
        ));
        assert!(eval("not not sel", &all, &["sel"]));
        assert!(eval(
            "SEL_A OR sel_b".to_lowercase().as_str(),
            &all,
            &["sel_b"]
        ));
    }

    #[test]
    fn bad_conditions_are_named() {
        let n = names(&["sel"]);
        for (c, why) in [
            ("sel and", "ends too early"),
            ("(sel", "not closed"),
            ("sel)", "unexpected"),
            ("other", "not a selection"),
            ("2 of sel*", "only `1 of`"),
            ("1 of x*", "matches no selection"),
            ("sel | count() > 5", "aggregations"),
        ] {
            let e = parse(c, &n).unwrap_err();
            assert!(e.contains(why), "{c}: {e}");
        }
        let deep = format!("{}sel{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(&deep, &n).unwrap_err().contains("deeper"));
    }

    #[test]
    fn selection_wildcards() {
        assert!(wildcard("sel*", "selection"));
        assert!(wildcard("*_a", "sel_a"));
        assert!(wildcard("s*l*n", "selection"));
        assert!(!wildcard("sel*", "filter"));
        assert!(wildcard("sel", "sel") && !wildcard("sel", "sel2"));
    }
}
