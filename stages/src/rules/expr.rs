//! The expressions of `meta` rules and `if` lines: Perl's boolean and arithmetic
//! operators over numbers and names, with Perl's precedence.

/// A parsed expression; names are resolved to indices by the caller's resolver.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// A number literal.
    Num(f64),
    /// A rule (its index in the rule set).
    Rule(usize),
    /// `!x`.
    Not(Box<Expr>),
    /// `-x`.
    Neg(Box<Expr>),
    /// A binary operator.
    Bin(Op, Box<Expr>, Box<Expr>),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    fn precedence(self) -> u8 {
        match self {
            Op::Or => 1,
            Op::And => 2,
            Op::Eq | Op::Ne => 3,
            Op::Lt | Op::Gt | Op::Le | Op::Ge => 4,
            Op::Add | Op::Sub => 5,
            Op::Mul | Op::Div => 6,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Name(String),
    Op(Op),
    Not,
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let two = text.get(i..i + 2).unwrap_or("");
        let (token, len) = match b {
            b' ' | b'\t' => {
                i += 1;
                continue;
            }
            b'0'..=b'9' | b'.' => {
                let len = bytes[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_digit() || *c == b'.'))
                    .unwrap_or(bytes.len() - i);
                let number = &text[i..i + len];
                let value = number
                    .parse::<f64>()
                    .map_err(|_| format!("bad number {number:?}"))?;
                (Token::Num(value), len)
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'_' => {
                let len = bytes[i..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .unwrap_or(bytes.len() - i);
                (Token::Name(text[i..i + len].to_owned()), len)
            }
            _ => match two {
                "&&" => (Token::Op(Op::And), 2),
                "||" => (Token::Op(Op::Or), 2),
                "==" => (Token::Op(Op::Eq), 2),
                "!=" => (Token::Op(Op::Ne), 2),
                "<=" => (Token::Op(Op::Le), 2),
                ">=" => (Token::Op(Op::Ge), 2),
                _ => match b {
                    b'!' => (Token::Not, 1),
                    b'<' => (Token::Op(Op::Lt), 1),
                    b'>' => (Token::Op(Op::Gt), 1),
                    b'+' => (Token::Op(Op::Add), 1),
                    b'-' => (Token::Op(Op::Sub), 1),
                    b'*' => (Token::Op(Op::Mul), 1),
                    b'/' => (Token::Op(Op::Div), 1),
                    b'(' => (Token::Open, 1),
                    b')' => (Token::Close, 1),
                    _ => {
                        let c = text[i..].chars().next().unwrap_or('?');
                        return Err(format!("unexpected {c:?}"));
                    }
                },
            },
        };
        out.push(token);
        i += len;
    }
    Ok(out)
}

/// Parses `text`; `resolve` turns a name into an expression (or says why it cannot).
pub(crate) fn parse(
    text: &str,
    resolve: &mut dyn FnMut(&str) -> Result<Expr, String>,
) -> Result<Expr, String> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        tokens,
        at: 0,
        resolve,
        depth: 0,
    };
    let expr = parser.binary(0)?;
    if parser.at != parser.tokens.len() {
        return Err(format!("unexpected {:?}", parser.tokens[parser.at]));
    }
    Ok(expr)
}

struct Parser<'r> {
    tokens: Vec<Token>,
    at: usize,
    resolve: &'r mut dyn FnMut(&str) -> Result<Expr, String>,
    depth: usize,
}

/// Deep nesting in a hostile rule file must not overflow the stack.
const MAX_DEPTH: usize = 200;

impl Parser<'_> {
    fn binary(&mut self, min: u8) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while let Some(Token::Op(op)) = self.tokens.get(self.at) {
            let op = *op;
            // Left-associative precedence climbing.
            if op.precedence() <= min {
                break;
            }
            self.at += 1;
            let right = self.binary(op.precedence())?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("expression nested too deeply".into());
        }
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        let expr = match token {
            Some(Token::Not) => Expr::Not(Box::new(self.unary()?)),
            Some(Token::Op(Op::Sub)) => Expr::Neg(Box::new(self.unary()?)),
            Some(Token::Op(Op::Add)) => self.unary()?,
            Some(Token::Num(n)) => Expr::Num(n),
            Some(Token::Name(name)) => (self.resolve)(&name)?,
            Some(Token::Open) => {
                let inner = self.binary(0)?;
                if self.tokens.get(self.at) != Some(&Token::Close) {
                    return Err("missing ')'".into());
                }
                self.at += 1;
                inner
            }
            Some(other) => return Err(format!("unexpected {other:?}")),
            None => return Err("unexpected end".into()),
        };
        self.depth -= 1;
        Ok(expr)
    }
}

impl Expr {
    /// Evaluates with `value(rule)` giving each rule's value (1 for a hit, 0 otherwise).
    pub(crate) fn eval(&self, value: &dyn Fn(usize) -> f64) -> f64 {
        let truth = |b: bool| if b { 1.0 } else { 0.0 };
        match self {
            Expr::Num(n) => *n,
            Expr::Rule(i) => value(*i),
            Expr::Not(e) => truth(e.eval(value) == 0.0),
            Expr::Neg(e) => -e.eval(value),
            Expr::Bin(op, a, b) => {
                let a = a.eval(value);
                // Short-circuit as Perl does; the result is the deciding operand's truth.
                match op {
                    Op::Or => return truth(a != 0.0 || b.eval(value) != 0.0),
                    Op::And => return truth(a != 0.0 && b.eval(value) != 0.0),
                    _ => {}
                }
                let b = b.eval(value);
                match op {
                    Op::Eq => truth(a == b),
                    Op::Ne => truth(a != b),
                    Op::Lt => truth(a < b),
                    Op::Gt => truth(a > b),
                    Op::Le => truth(a <= b),
                    Op::Ge => truth(a >= b),
                    Op::Add => a + b,
                    Op::Sub => a - b,
                    Op::Mul => a * b,
                    // Perl dies on division by zero; SpamAssassin then treats the meta as
                    // not hit.
                    Op::Div if b == 0.0 => 0.0,
                    Op::Div => a / b,
                    Op::Or | Op::And => 0.0,
                }
            }
        }
    }
}

impl Expr {
    /// Whether the expression can only grow (or stay) as each rule that `watched`
    /// selects goes from 0 to 1. Then reading a missing rule as 0 can make the
    /// expression miss where SpamAssassin would hit, never hit where it would not.
    pub(crate) fn rises_with(&self, watched: &dyn Fn(usize) -> bool) -> bool {
        self.polarity(watched, Polarity::Up)
    }

    fn mentions(&self, watched: &dyn Fn(usize) -> bool) -> bool {
        match self {
            Expr::Num(_) => false,
            Expr::Rule(i) => watched(*i),
            Expr::Not(e) | Expr::Neg(e) => e.mentions(watched),
            Expr::Bin(_, a, b) => a.mentions(watched) || b.mentions(watched),
        }
    }

    /// Whether the watched rules appear only where they move the value in direction
    /// `want` (or are absent).
    fn polarity(&self, watched: &dyn Fn(usize) -> bool, want: Polarity) -> bool {
        use Polarity::Up;
        match self {
            Expr::Num(_) => true,
            // A rule's own value rises with it.
            Expr::Rule(i) => !watched(*i) || want == Up,
            Expr::Not(e) | Expr::Neg(e) => e.polarity(watched, want.flip()),
            Expr::Bin(op, a, b) => match op {
                Op::Or | Op::And | Op::Add => {
                    a.polarity(watched, want) && b.polarity(watched, want)
                }
                Op::Sub => a.polarity(watched, want) && b.polarity(watched, want.flip()),
                Op::Gt | Op::Ge => a.polarity(watched, want) && b.polarity(watched, want.flip()),
                Op::Lt | Op::Le => a.polarity(watched, want.flip()) && b.polarity(watched, want),
                // A product by a non-negative constant, or a quotient by a positive one,
                // keeps the direction.
                Op::Mul => match (&**a, &**b) {
                    (Expr::Num(n), e) | (e, Expr::Num(n)) if *n >= 0.0 => e.polarity(watched, want),
                    _ => !a.mentions(watched) && !b.mentions(watched),
                },
                Op::Div => match &**b {
                    Expr::Num(n) if *n > 0.0 => a.polarity(watched, want),
                    _ => !a.mentions(watched) && !b.mentions(watched),
                },
                // Equality is not monotone at all.
                Op::Eq | Op::Ne => !a.mentions(watched) && !b.mentions(watched),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polarity {
    Up,
    Down,
}

impl Polarity {
    fn flip(self) -> Polarity {
        match self {
            Polarity::Up => Polarity::Down,
            Polarity::Down => Polarity::Up,
        }
    }
}

/// Evaluates the condition of an `if` line. `plugin(NAME)` is true for the plugins in
/// `plugins`; `can(...)` and `has(...)` are true only for what `features` vouches for;
/// `version` is SpamAssassin 4.0's, the syntax this engine follows; `perl_version` is
/// 5.036. Any other name is an error, which the caller treats as false.
pub(crate) fn eval_condition(
    text: &str,
    plugins: &dyn Fn(&str) -> bool,
    features: &dyn Fn(&str) -> bool,
) -> Result<bool, String> {
    let mut rewritten = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('(') {
        let head = &rest[..open];
        let word_start = head
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |p| p + 1);
        let word = &head[word_start..];
        if matches!(word, "plugin" | "can" | "has") {
            let close = rest[open..]
                .find(')')
                .map(|p| open + p)
                .ok_or("missing ')'")?;
            let arg = rest[open + 1..close].trim();
            let value = if word == "plugin" {
                plugins(arg)
            } else {
                features(arg)
            };
            rewritten.push_str(&head[..word_start]);
            rewritten.push_str(if value { " 1 " } else { " 0 " });
            rest = &rest[close + 1..];
        } else {
            rewritten.push_str(&rest[..=open]);
            rest = &rest[open + 1..];
        }
    }
    rewritten.push_str(rest);
    let expr = parse(&rewritten, &mut |name| match name {
        "version" => Ok(Expr::Num(4.0)),
        "perl_version" => Ok(Expr::Num(5.036)),
        other => Err(format!("unknown name {other:?} in condition")),
    })?;
    Ok(expr.eval(&|_| 0.0) != 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str, values: &[f64]) -> f64 {
        let names = ["A", "B", "C"];
        let expr = parse(text, &mut |n| {
            names
                .iter()
                .position(|x| *x == n)
                .map(Expr::Rule)
                .ok_or_else(|| n.to_owned())
        })
        .expect("parses");
        expr.eval(&|i| values[i])
    }

    #[test]
    fn precedence_is_perls() {
        assert_eq!(eval("A || B && C", &[1.0, 0.0, 0.0]), 1.0);
        assert_eq!(eval("A + B * 2 > 2", &[1.0, 1.0, 0.0]), 1.0);
        assert_eq!(eval("(A + B) * 2 == 4", &[1.0, 1.0, 0.0]), 1.0);
        assert_eq!(eval("!A && !B", &[0.0, 0.0, 1.0]), 1.0);
        assert_eq!(eval("A - B - C", &[5.0, 1.0, 1.0]), 3.0);
        assert_eq!(eval("A / B", &[1.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn monotone_in_missing_rules() {
        let rises = |text: &str| {
            let names = ["A", "B", "C"];
            let expr = parse(text, &mut |n| {
                names
                    .iter()
                    .position(|x| *x == n)
                    .map(Expr::Rule)
                    .ok_or_else(|| n.to_owned())
            })
            .expect("parses");
            // B is the missing one.
            expr.rises_with(&|i| i == 1)
        };
        assert!(rises("A && B"));
        assert!(rises("(A || B) && !C"));
        assert!(rises("A + B + C > 1"));
        assert!(rises("2 * B >= 1"));
        assert!(rises("!(A && !B)"));
        assert!(!rises("A && !B"));
        assert!(!rises("A + B < 2"));
        assert!(!rises("A - B"));
        assert!(!rises("B == 0"));
        assert!(rises("A - (C - B) > 0"));
    }

    #[test]
    fn conditions() {
        let plugins = |p: &str| p == "Mail::SpamAssassin::Plugin::HeaderEval";
        let features = |f: &str| f == "Mail::SpamAssassin::Conf::feature_bug6558_free";
        let eval_condition =
            |text: &str, plugins: &dyn Fn(&str) -> bool| eval_condition(text, plugins, &features);
        assert_eq!(
            eval_condition(
                "can(Mail::SpamAssassin::Conf::feature_bug6558_free)",
                &plugins
            ),
            Ok(true)
        );
        assert_eq!(
            eval_condition("plugin(Mail::SpamAssassin::Plugin::HeaderEval)", &plugins),
            Ok(true)
        );
        assert_eq!(eval_condition("version >= 3.004000", &plugins), Ok(true));
        assert_eq!(
            eval_condition("can(Mail::SpamAssassin::Conf::feature_x)", &plugins),
            Ok(false)
        );
        assert_eq!(
            eval_condition("!plugin(Mail::SpamAssassin::Plugin::Foo)", &plugins),
            Ok(true)
        );
        assert!(eval_condition("weird", &plugins).is_err());
    }
}
