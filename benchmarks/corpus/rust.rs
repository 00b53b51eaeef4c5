use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead};

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Number(f64),
    Ident(String),
    Op(char),
    LParen,
    RParen,
}

#[derive(Debug)]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.position, self.message)
    }
}

pub fn tokenize(input: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let value = text.parse().map_err(|_| ParseError {
                position: start,
                message: format!("bad number {}", text),
            })?;
            tokens.push(Token::Number(value));
            continue;
        }
        match c {
            '+' | '-' | '*' | '/' => tokens.push(Token::Op(c)),
            '(' => tokens.push(Token::LParen),
            ')' => tokens.push(Token::RParen),
            _ => {
                return Err(ParseError {
                    position: i,
                    message: format!("unexpected {}", c),
                })
            }
        }
        i += 1;
    }
    Ok(tokens)
}

fn main() {
    let mut variables: HashMap<String, f64> = HashMap::new();
    variables.insert("pi".to_string(), std::f64::consts::PI);
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let line = line.expect("read stdin");
        match tokenize(&line) {
            Ok(tokens) => println!("{:?}", tokens),
            Err(err) => eprintln!("error: {}", err),
        }
    }
}
